//! The backup commands as a user runs them: the real `crosscheck` binary on
//! real directories, its `--json` output parsed, its exit codes checked.
//!
//! The one idea: every test compares what comes back out of the repository
//! with what went in, byte for byte, through the same digest of a whole tree
//! ([`tree_digest`]) — a restore that "succeeds" but differs is a failure.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// What a tree holds, path by path: a file's SHA-256 and mode bits, a
/// symlink's target, or a directory.
type TreeDigest = BTreeMap<String, String>;

fn crosscheck(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_crosscheck"))
        .args(args)
        .output()
        .expect("binary runs")
}

/// Runs a command that must succeed and print JSON; returns the JSON.
fn json_ok(args: &[&std::ffi::OsStr]) -> Value {
    let output = crosscheck(args);
    assert!(
        output.status.success(),
        "expected {args:?} to succeed; exit {:?}, stderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
        panic!(
            "{args:?} printed no JSON ({error}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

fn backup(source: &Path, repo: &Path) -> Value {
    json_ok(&[
        "backup".as_ref(),
        source.as_os_str(),
        "--repo".as_ref(),
        repo.as_os_str(),
        "--json".as_ref(),
    ])
}

fn restore(snapshot: &str, target: &Path, repo: &Path) -> Output {
    crosscheck(&[
        "restore".as_ref(),
        snapshot.as_ref(),
        target.as_os_str(),
        "--repo".as_ref(),
        repo.as_os_str(),
        "--json".as_ref(),
    ])
}

fn fsck(repo: &Path) -> (Option<i32>, Value) {
    let output = crosscheck(&[
        "fsck".as_ref(),
        "--repo".as_ref(),
        repo.as_os_str(),
        "--json".as_ref(),
    ]);
    let report = serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
        panic!(
            "fsck printed no JSON ({error}); stdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output.status.code(), report)
}

/// Writes `files` files of random sizes up to `size_max_bytes` (some empty)
/// in a few nested directories, plus one symlink.
fn write_tree(root: &Path, rng: &mut ChaCha8Rng, files: usize, size_max_bytes: usize) {
    for index in 0..files {
        let dir = root.join(format!("d{}/e{}", index % 3, index % 2));
        fs::create_dir_all(&dir).unwrap();
        let size_bytes = if index % 7 == 0 {
            0
        } else {
            rng.random_range(1..=size_max_bytes)
        };
        let mut bytes = vec![0u8; size_bytes];
        rng.fill_bytes(&mut bytes);
        fs::write(dir.join(format!("f{index}.bin")), bytes).unwrap();
    }
    std::os::unix::fs::symlink("d0/e0/f0.bin", root.join("link-to-f0")).unwrap();
}

fn tree_digest(root: &Path) -> TreeDigest {
    let mut digest = TreeDigest::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            let relative = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let metadata = fs::symlink_metadata(&path).unwrap();
            let value = if metadata.file_type().is_fifo() {
                "fifo".to_string()
            } else if metadata.is_symlink() {
                format!("symlink -> {}", fs::read_link(&path).unwrap().display())
            } else if metadata.is_dir() {
                pending.push(path);
                "dir".to_string()
            } else {
                let mode = metadata.permissions().mode() & 0o777;
                format!(
                    "file {:o} {}",
                    mode,
                    hex::encode(Sha256::digest(fs::read(&path).unwrap()))
                )
            };
            digest.insert(relative, value);
        }
    }
    digest
}

fn snapshot_id(report: &Value) -> String {
    report["snapshot_id"]
        .as_str()
        .expect("backup JSON has snapshot_id")
        .to_string()
}

#[test]
fn backup_restore_round_trip_is_byte_identical_and_rebackup_stores_nothing() {
    let scratch = tempfile::tempdir().unwrap();
    let (source, repo) = (scratch.path().join("source"), scratch.path().join("repo"));
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    write_tree(&source, &mut rng, 24, 300_000);
    fs::set_permissions(
        source.join("d1/e1/f1.bin"),
        fs::Permissions::from_mode(0o750),
    )
    .unwrap();
    let fifo = std::ffi::CString::new(source.join("a-fifo").into_os_string().into_encoded_bytes());
    // SAFETY: a valid NUL-terminated path; mkfifo only creates a node.
    assert_eq!(unsafe { libc::mkfifo(fifo.unwrap().as_ptr(), 0o644) }, 0);

    let first = backup(&source, &repo);
    assert_eq!(first["files"], 24, "{first}");
    assert_eq!(first["symlinks"], 1, "{first}");
    assert!(first["new_chunks"].as_u64().unwrap() > 0, "{first}");
    assert_eq!(
        first["new_chunks"], first["chunks"],
        "a fresh repo stores every chunk: {first}"
    );
    // New chunks were written, so packs took some of the backup's time.
    let pack_write_seconds = first["pack_write_seconds"].as_f64().unwrap();
    let seconds = first["seconds"].as_f64().unwrap();
    assert!(
        pack_write_seconds > 0.0 && pack_write_seconds <= seconds,
        "{first}"
    );
    let skipped = first["skipped"].as_array().unwrap();
    assert_eq!(
        skipped.len(),
        1,
        "the fifo, and only it, is reported skipped: {first}"
    );
    assert_eq!(skipped[0]["path"], "a-fifo");
    assert_eq!(
        skipped[0]["unreadable"], false,
        "skipped by design: {first}"
    );
    assert!(
        skipped[0]["reason"]
            .as_str()
            .unwrap()
            .contains("special file"),
        "{first}"
    );

    let again = backup(&source, &repo);
    assert_eq!(
        again["new_chunks"], 0,
        "an unchanged tree must store nothing new: {again}"
    );
    assert_eq!(again["new_bytes"], 0, "{again}");
    assert_eq!(
        again["pack_write_seconds"], 0.0,
        "nothing to write: {again}"
    );
    // The latest snapshot of the same directory is the parent: nothing is read.
    assert_eq!(again["parent"], first["snapshot_id"], "{again}");
    assert_eq!(again["bytes_read"], 0, "{again}");
    assert_eq!(again["unchanged_bytes"], first["bytes_read"], "{again}");
    assert_eq!(again["unchanged_files"], first["files"], "{again}");
    // --force reads everything again, and still stores nothing new.
    let forced = json_ok(&[
        "backup".as_ref(),
        source.as_os_str(),
        "--repo".as_ref(),
        repo.as_os_str(),
        "--force".as_ref(),
        "--json".as_ref(),
    ]);
    assert_eq!(forced["parent"], Value::Null, "{forced}");
    assert_eq!(forced["bytes_read"], first["bytes_read"], "{forced}");
    assert_eq!(forced["new_chunks"], 0, "{forced}");

    let id = snapshot_id(&first);
    let target = scratch.path().join("restored");
    // A prefix is matched case-insensitively (ids are lowercase hex).
    let output = restore(&id[..8].to_uppercase(), &target, &repo);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let restored: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(restored["snapshot_id"], id.as_str());
    let mut expected = tree_digest(&source);
    assert_eq!(expected.remove("a-fifo").as_deref(), Some("fifo"));
    assert_eq!(tree_digest(&target), expected);
    // Files and directories get their modification times back, to the
    // nanosecond.
    let old_time = std::time::UNIX_EPOCH + std::time::Duration::new(1_000_000_000, 123_456_789);
    let file = fs::File::options()
        .write(true)
        .open(source.join("d1/e1/f1.bin"))
        .unwrap();
    file.set_modified(old_time).unwrap();
    // Past 2262, where an i64 of nanoseconds ends.
    let far_time = std::time::UNIX_EPOCH + std::time::Duration::new(10_500_000_000, 1);
    let far = fs::File::options()
        .write(true)
        .open(source.join("d0/e0/f0.bin"));
    far.unwrap().set_modified(far_time).unwrap();
    // Owners come back when restoring as root (numeric ids need no user).
    // SAFETY: geteuid has no preconditions.
    let as_root = unsafe { libc::geteuid() } == 0;
    if as_root {
        for path in ["d1/e1/f1.bin", "d1", "link-to-f0", ""] {
            std::os::unix::fs::lchown(source.join(path), Some(1234), Some(5678)).unwrap();
        }
    }
    // The backed-up directory's own mode and time go to the target.
    fs::set_permissions(&source, fs::Permissions::from_mode(0o750)).unwrap();
    let root_time = std::time::UNIX_EPOCH + std::time::Duration::new(1_200_000_000, 7);
    fs::File::open(&source)
        .unwrap()
        .set_modified(root_time)
        .unwrap();
    let dated = backup(&source, &repo);
    let dated_target = scratch.path().join("restored-dated");
    let output = restore(&snapshot_id(&dated), &dated_target, &repo);
    assert!(output.status.success(), "{output:?}");
    // Directories too (a symlink's own time is not kept).
    for path in expected
        .keys()
        .filter(|path| !source.join(path).is_symlink())
    {
        let modified = |root: &Path| fs::metadata(root.join(path)).unwrap().modified().unwrap();
        assert_eq!(modified(&dated_target), modified(&source), "{path}");
    }
    let restored_time = fs::metadata(dated_target.join("d1/e1/f1.bin")).unwrap();
    assert_eq!(restored_time.modified().unwrap(), old_time);
    let restored_far = fs::metadata(dated_target.join("d0/e0/f0.bin")).unwrap();
    assert_eq!(restored_far.modified().unwrap(), far_time);
    for path in expected.keys() {
        let owner = |root: &Path| {
            let metadata = fs::symlink_metadata(root.join(path)).unwrap();
            (metadata.uid(), metadata.gid())
        };
        if as_root {
            assert_eq!(owner(&dated_target), owner(&source), "{path}");
        } else {
            // SAFETY: as above.
            let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
            assert_eq!(
                owner(&dated_target),
                (uid, gid),
                "{path}: the restorer's own"
            );
        }
    }
    if as_root {
        let chowned = fs::symlink_metadata(dated_target.join("link-to-f0")).unwrap();
        assert_eq!((chowned.uid(), chowned.gid()), (1234, 5678));
    }
    let (root, restored_root) = (
        fs::metadata(&source).unwrap(),
        fs::metadata(&dated_target).unwrap(),
    );
    assert_eq!(restored_root.permissions().mode() & 0o7777, 0o750);
    assert_eq!(restored_root.modified().unwrap(), root_time);
    if as_root {
        assert_eq!((restored_root.uid(), restored_root.gid()), (1234, 5678));
    }
    assert_eq!(
        root.modified().unwrap(),
        root_time,
        "the source kept its time"
    );

    let listed = json_ok(&[
        "snapshots".as_ref(),
        "--repo".as_ref(),
        repo.as_os_str(),
        "--json".as_ref(),
    ]);
    let ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 4, "{listed}");
    let made = [&first, &again, &forced, &dated].map(snapshot_id);
    assert!(
        made.iter().all(|made| ids.contains(&made.as_str())),
        "{listed}"
    );
    let (code, report) = fsck(&repo);
    assert_eq!(
        code,
        Some(0),
        "a healthy repository must pass fsck: {report}"
    );
    assert_eq!(report["clean"], true, "{report}");
}

#[test]
fn restore_of_an_unknown_or_ambiguous_snapshot_is_a_usage_error() {
    let scratch = tempfile::tempdir().unwrap();
    let (source, repo) = (scratch.path().join("source"), scratch.path().join("repo"));
    write_tree(&source, &mut ChaCha8Rng::seed_from_u64(12), 3, 1000);
    backup(&source, &repo);
    let output = restore("zzzz", &scratch.path().join("t"), &repo);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("no snapshot matches"));
    let output = restore(
        "x",
        &scratch.path().join("t"),
        &scratch.path().join("no-repo"),
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("expected a repository directory"));
}

/// Runs `args`, which must fail as a usage error (exit 2) saying `expected`.
fn assert_usage_error(args: &[&std::ffi::OsStr], expected: &str) -> String {
    let output = crosscheck(args);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
    assert!(stderr.contains(expected), "{args:?}: {stderr}");
    stderr
}

/// A directory that is no repository: `theirs/notes.txt`.
fn someone_elses_directory(scratch: &Path) -> PathBuf {
    let theirs = scratch.join("theirs");
    fs::create_dir(&theirs).unwrap();
    fs::write(theirs.join("notes.txt"), b"mine").unwrap();
    theirs
}

/// `theirs` still holds its one file, unchanged, and nothing else.
fn assert_untouched(theirs: &Path) {
    let left: Vec<_> = fs::read_dir(theirs)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, vec![std::ffi::OsString::from("notes.txt")]);
    assert_eq!(fs::read(theirs.join("notes.txt")).unwrap(), b"mine");
}

/// A mistyped `--repo` naming someone's directory, or a file, is refused
/// before anything is written there.
#[test]
fn backup_refuses_to_make_a_repository_in_a_foreign_directory_or_a_file() {
    let scratch = tempfile::tempdir().unwrap();
    let source = scratch.path().join("source");
    fs::create_dir(&source).unwrap();
    fs::write(source.join("a"), b"a").unwrap();
    let theirs = someone_elses_directory(scratch.path());
    let file = scratch.path().join("file");
    fs::write(&file, b"not a directory").unwrap();
    for (repo, expected) in [(&theirs, "\"notes.txt\""), (&file, "found something else")] {
        let args = [
            "backup".as_ref(),
            source.as_os_str(),
            "--repo".as_ref(),
            repo.as_os_str(),
        ];
        assert_usage_error(&args, expected);
    }
    assert_untouched(&theirs);
    assert_eq!(fs::read(&file).unwrap(), b"not a directory");
    // An empty directory, and one an interrupted creation left, are taken.
    let empty = scratch.path().join("empty");
    fs::create_dir_all(empty.join("data")).unwrap();
    assert!(snapshot_id(&backup(&source, &empty)).len() == 64);
}

/// Pack files of the repository, by path.
fn pack_files(repo: &Path) -> Vec<PathBuf> {
    let mut packs = Vec::new();
    for shard in fs::read_dir(repo.join("data")).unwrap() {
        for pack in fs::read_dir(shard.unwrap().path()).unwrap() {
            let path = pack.unwrap().path();
            if path.extension().is_some_and(|ext| ext == "pack") {
                packs.push(path);
            }
        }
    }
    packs.sort();
    packs
}

/// Backs up four distinct trees, one pack each; returns (snapshot, source, pack).
fn four_snapshots(scratch: &Path, repo: &Path) -> Vec<(String, PathBuf, PathBuf)> {
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    let mut snapshots = Vec::new();
    for index in 0..4 {
        let source = scratch.join(format!("source-{index}"));
        write_tree(&source, &mut rng, 6, 200_000);
        let before = if repo.exists() {
            pack_files(repo)
        } else {
            Vec::new()
        };
        let id = snapshot_id(&backup(&source, repo));
        let new_packs: Vec<PathBuf> = pack_files(repo)
            .into_iter()
            .filter(|pack| !before.contains(pack))
            .collect();
        assert_eq!(
            new_packs.len(),
            1,
            "each small backup writes one pack: {new_packs:?}"
        );
        snapshots.push((id, source, new_packs[0].clone()));
    }
    snapshots
}

#[test]
fn fsck_names_a_flipped_bit_a_truncated_chunk_and_an_empty_pack_while_others_restore() {
    let scratch = tempfile::tempdir().unwrap();
    let repo = scratch.path().join("repo");
    let snapshots = four_snapshots(scratch.path(), &repo);
    // The last bytes of a pack are its last chunk's data (the header leads).
    let mut bytes = fs::read(&snapshots[0].2).unwrap();
    let last_index = bytes.len() - 1;
    bytes[last_index] ^= 0x01;
    fs::write(&snapshots[0].2, &bytes).unwrap();
    let length = fs::metadata(&snapshots[1].2).unwrap().len();
    fs::File::options()
        .write(true)
        .open(&snapshots[1].2)
        .unwrap()
        .set_len(length - 100)
        .unwrap();
    fs::File::options()
        .write(true)
        .open(&snapshots[2].2)
        .unwrap()
        .set_len(0)
        .unwrap();

    let (code, report) = fsck(&repo);
    assert_eq!(code, Some(1), "damage must exit 1: {report}");
    assert_eq!(report["clean"], false);
    let damaged: Vec<&str> = report["damaged_snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let mut expected: Vec<&str> = snapshots[..3]
        .iter()
        .map(|(id, _, _)| id.as_str())
        .collect();
    expected.sort();
    assert_eq!(
        damaged, expected,
        "exactly the three damaged snapshots: {report}"
    );
    let text = report.to_string();
    assert!(
        text.contains("HashMismatch"),
        "the flipped bit is a hash mismatch: {text}"
    );
    assert!(
        text.contains("Truncated"),
        "the cut pack is a truncation: {text}"
    );
    assert!(
        text.contains("ZeroLength"),
        "the emptied pack is zero-length: {text}"
    );
    // Each finding is an object a script reads by name.
    for chunk in report["damaged_chunks"].as_array().unwrap() {
        assert!(
            chunk["chunk"].is_string() && chunk["pack"].is_string(),
            "{chunk}"
        );
        assert!(
            chunk["description"].is_string() && !chunk["problem"].is_null(),
            "{chunk}"
        );
    }
    for pack in report["damaged_packs"].as_array().unwrap() {
        assert!(
            pack["path"].is_string() && !pack["problem"].is_null(),
            "{pack}"
        );
    }

    for (id, source, _) in &snapshots[..3] {
        let file = report["damaged_files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|file| file["snapshot"] == id.as_str())
            .unwrap_or_else(|| panic!("no damaged file named for {id}: {report}"));
        let (path, chunk) = (
            file["path"].as_str().unwrap(),
            file["chunk"].as_str().unwrap(),
        );
        assert!(
            source.join(path).is_file(),
            "{path} is a file of the damaged tree"
        );
        let output = restore(id, &scratch.path().join(format!("bad-{id}")), &repo);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains(chunk),
            "restore names the bad chunk {chunk}: {stderr}"
        );
        // The damaged file is left out, never written with wrong bytes.
        let restored: Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(restored["unrestored"][0]["path"], path, "{restored}");
        assert_eq!(restored["unrestored"][0]["chunk"], chunk, "{restored}");
        let bad_target = scratch.path().join(format!("bad-{id}"));
        assert!(!bad_target.join(path).exists(), "{path} left out");
    }
    let (id, source, _) = &snapshots[3];
    let target = scratch.path().join("intact");
    let output = restore(id, &target, &repo);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(tree_digest(&target), tree_digest(source));

    // --repair, then backing up the same trees again, heals every snapshot.
    let args = [
        "fsck".as_ref(),
        "--repo".as_ref(),
        repo.as_os_str(),
        "--repair".as_ref(),
        "--json".as_ref(),
    ];
    let repaired = crosscheck(&args);
    let stdout = String::from_utf8_lossy(&repaired.stdout);
    assert_eq!(repaired.status.code(), Some(1), "still damaged: {stdout}");
    // Read as a person would, the repair names each source to back up again.
    let told = crosscheck(&args[..4]);
    let told = String::from_utf8_lossy(&told.stdout);
    for (_, source, _) in &snapshots[..3] {
        let label = source.canonicalize().unwrap().display().to_string();
        assert!(
            told.contains(&format!("`crosscheck backup {label} --repo")),
            "{told}"
        );
    }
    // Once repaired, a plain fsck advises those backups, not another repair.
    let after = crosscheck(&args[..3]);
    let after = String::from_utf8_lossy(&after.stdout);
    assert!(after.contains("to heal: `crosscheck backup "), "{after}");
    assert!(!after.contains("--repair`, then back up"), "{after}");
    let repair: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        repair["repaired"]["packs_quarantined"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        repair["repaired"]["packs_rewritten"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    for (_, source, _) in &snapshots[..3] {
        backup(source, &repo);
    }
    let (code, report) = fsck(&repo);
    assert_eq!(code, Some(0), "healed: {report}");
    for (id, source, _) in &snapshots[..3] {
        let target = scratch.path().join(format!("healed-{id}"));
        let output = restore(id, &target, &repo);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(tree_digest(&target), tree_digest(source), "{id} healed");
    }
}

/// One damaged pack header costs every file in the pack. Read as a person
/// would, fsck says the cause first, lists a bounded number of each kind of
/// finding, and ends with the counts; a restore names the pack once.
#[test]
fn one_unreadable_pack_is_named_first_and_its_many_files_counted_not_flooded() {
    let scratch = tempfile::tempdir().unwrap();
    let (source, repo) = (scratch.path().join("source"), scratch.path().join("repo"));
    write_tree(&source, &mut ChaCha8Rng::seed_from_u64(16), 60, 3000);
    let id = snapshot_id(&backup(&source, &repo));
    let packs = pack_files(&repo);
    assert_eq!(packs.len(), 1, "small files share one pack");
    let mut bytes = fs::read(&packs[0]).unwrap();
    bytes[0] ^= 0x01;
    fs::write(&packs[0], bytes).unwrap();

    let output = crosscheck(&["fsck".as_ref(), "--repo".as_ref(), repo.as_os_str()]);
    assert_eq!(output.status.code(), Some(1));
    let text = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[1].starts_with("DAMAGED pack "),
        "the cause comes first: {text}"
    );
    assert!(
        text.contains("more like it (`--json` lists every one)"),
        "{text}"
    );
    assert!(lines.len() < 60, "{} lines: {text}", lines.len());
    assert!(
        text.contains("repository DAMAGED: 1 damaged packs"),
        "{text}"
    );

    let output = restore(&id, &scratch.path().join("out"), &repo);
    assert_eq!(output.status.code(), Some(1));
    let error = json_error(&output);
    let error = error["error"].as_str().unwrap();
    let pack_name = packs[0].file_name().unwrap().to_str().unwrap();
    assert_eq!(error.matches(pack_name).count(), 1, "{error}");
    assert!(error.contains(" more"), "the rest are counted: {error}");
}

/// Writes `manifest` as a snapshot of its own (named by its SHA-256, as the
/// repository names manifests) and returns its id. The text is edited in
/// place, as an attacker would, so its field order stays the repository's.
fn plant_manifest(repo: &Path, manifest: &str) -> String {
    let id = hex::encode(Sha256::digest(manifest.as_bytes()));
    fs::write(repo.join(format!("snapshots/{id}.json")), manifest).unwrap();
    id
}

#[test]
fn restore_refuses_dot_dot_absolute_and_through_symlink_paths_before_writing() {
    let scratch = tempfile::tempdir().unwrap();
    let (source, repo) = (scratch.path().join("source"), scratch.path().join("repo"));
    write_tree(&source, &mut ChaCha8Rng::seed_from_u64(31), 4, 5000);
    let id = snapshot_id(&backup(&source, &repo));
    let original = fs::read_to_string(repo.join(format!("snapshots/{id}.json"))).unwrap();
    let good_path = r#""path":"d0/e0/f0.bin""#;
    assert!(original.contains(good_path), "{original}");
    let outside = scratch.path().join("outside");
    let absolute = scratch.path().join("absolute-x").display().to_string();
    let cases = [
        ("dot-dot", "d0/../../escaped-x".to_string()),
        ("absolute", absolute.clone()),
        ("symlink", "ln/x".to_string()),
    ];
    let mut planted = Vec::new();
    // A millisecond newer than the sound snapshot, so `restore latest` below
    // meets every planted one first, whatever their ids.
    let time_field = |manifest: &str| {
        let start = manifest.find(r#""time_unix_ms":"#).expect("a time") + 15;
        let digits = manifest[start..]
            .find(|c: char| !c.is_ascii_digit())
            .unwrap();
        manifest[start..start + digits].to_string()
    };
    let time = time_field(&original);
    let newer_time: u64 = time.parse::<u64>().unwrap() + 1;
    for (case, bad_path) in &cases {
        let mut manifest = original.replace(good_path, &format!(r#""path":"{bad_path}""#));
        manifest = manifest.replace(
            &format!(r#""time_unix_ms":{time}"#),
            &format!(r#""time_unix_ms":{newer_time}"#),
        );
        if *case == "symlink" {
            let link = format!(
                r#"{{"path":"ln","mode":511,"kind":"symlink","target":"{}"}},"#,
                outside.display()
            );
            manifest = manifest.replace(r#""entries":["#, &format!(r#""entries":[{link}"#));
        }
        let bad_id = plant_manifest(&repo, &manifest);
        planted.push(bad_id.clone());
        let target = scratch.path().join(format!("target-{case}"));
        let output = restore(&bad_id, &target, &repo);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{case}: {stderr}");
        assert!(
            stderr.contains("refused before writing anything"),
            "{case}: {stderr}"
        );
        assert!(
            stderr.contains(bad_path.as_str()),
            "{case}: the error names the path: {stderr}"
        );
        let written = target.exists() && fs::read_dir(&target).unwrap().next().is_some();
        assert!(!written, "{case}: nothing may be written into the target");
    }
    assert!(!scratch.path().join("escaped-x").exists() && !Path::new(&absolute).exists());
    assert!(!outside.exists(), "nothing was written through the symlink");
    let (code, report) = fsck(&repo);
    assert_eq!(
        code,
        Some(1),
        "fsck reports the planted manifests: {report}"
    );
    let mut damaged: Vec<String> = report["damaged_snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    damaged.sort();
    planted.sort();
    assert_eq!(damaged, planted, "{report}");

    // `restore latest` passes over every planted one (each is newer), names
    // them, and restores the sound snapshot.
    let target = scratch.path().join("latest");
    let args = [
        "restore".as_ref(),
        "latest".as_ref(),
        target.as_os_str(),
        "--repo".as_ref(),
        repo.as_os_str(),
        "--json".as_ref(),
    ];
    let output = crosscheck(&args);
    assert_eq!(output.status.code(), Some(1));
    let restored: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(restored["snapshot_id"].as_str(), Some(id.as_str()));
    let newer: Vec<&String> = planted.iter().collect();
    let mut passed: Vec<&str> = restored["passed_over"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    passed.sort();
    assert_eq!(passed, newer, "{restored}");
    assert_eq!(tree_digest(&target), tree_digest(&source));
    // Repair moves every planted manifest to quarantine/, and fsck is clean.
    let repair = crosscheck(&[
        "fsck".as_ref(),
        "--repo".as_ref(),
        repo.as_os_str(),
        "--repair".as_ref(),
    ]);
    assert!(String::from_utf8_lossy(&repair.stdout).contains("repository clean"));
    assert_eq!(
        fs::read_dir(repo.join("quarantine/snapshots"))
            .unwrap()
            .count(),
        planted.len()
    );
    assert_eq!(fsck(&repo).0, Some(0));
}

/// Rewrites `count` randomly chosen files of `source` with fresh random
/// bytes and adds one new file, so the next backup has new chunks to write.
fn mutate_tree(source: &Path, rng: &mut ChaCha8Rng, round: usize, count: usize) {
    let mut files: Vec<PathBuf> = Vec::new();
    let mut pending = vec![source.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let metadata = fs::symlink_metadata(&path).unwrap();
            if metadata.is_dir() {
                pending.push(path);
            } else if metadata.is_file() {
                files.push(path);
            }
        }
    }
    files.sort();
    for _ in 0..count {
        let path = &files[rng.random_range(0..files.len())];
        let mut bytes = vec![0u8; rng.random_range(1..=4 << 20)];
        rng.fill_bytes(&mut bytes);
        fs::write(path, bytes).unwrap();
    }
    let mut bytes = vec![0u8; 4 << 20];
    rng.fill_bytes(&mut bytes);
    fs::write(source.join(format!("d0/new-{round}.bin")), bytes).unwrap();
}

fn listed_ids(repo: &Path) -> Vec<String> {
    let listed = json_ok(&[
        "snapshots".as_ref(),
        "--repo".as_ref(),
        repo.as_os_str(),
        "--json".as_ref(),
    ]);
    listed
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

/// Every known snapshot restores byte-identical, and fsck finds no damage
/// (leftovers allowed). Returns fsck's (temp files, unreferenced chunks).
fn check_repository(
    repo: &Path,
    known: &BTreeMap<String, TreeDigest>,
    scratch: &Path,
) -> (usize, u64) {
    for (index, (id, digest)) in known.iter().enumerate() {
        let target = scratch.join(format!("check-{index}"));
        let output = restore(id, &target, repo);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "snapshot {id} must still restore: {stderr}"
        );
        assert!(
            tree_digest(&target) == *digest,
            "snapshot {id} restored different bytes"
        );
        fs::remove_dir_all(&target).unwrap();
    }
    let (code, report) = fsck(repo);
    assert_eq!(
        code,
        Some(0),
        "fsck may report only leftovers after a kill: {report}"
    );
    let temp_files = report["temp_files"].as_array().unwrap().len();
    (temp_files, report["unreferenced_chunks"].as_u64().unwrap())
}

/// The seed of the kill test: `CROSSCHECK_KILL_SEED` replays a run; by
/// default each run draws new kill points (the seed is printed).
fn kill_seed() -> u64 {
    match std::env::var("CROSSCHECK_KILL_SEED") {
        Ok(text) => text
            .parse()
            .expect("CROSSCHECK_KILL_SEED must be an unsigned integer"),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    }
}

#[test]
fn kill_9_mid_backup_leaves_every_earlier_snapshot_restorable() {
    const ROUNDS: usize = 6;
    let seed = kill_seed();
    println!(
        "kill -9 test: seed={seed}; replay with CROSSCHECK_KILL_SEED={seed} \
         cargo test -p crosscheck --test backup_cli kill_9 -- --nocapture"
    );
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let scratch = tempfile::tempdir().unwrap();
    let (source, repo) = (scratch.path().join("source"), scratch.path().join("repo"));
    write_tree(&source, &mut rng, 14, 6 << 20);
    let started = std::time::Instant::now();
    let first = backup(&source, &repo);
    let full_backup_ms = started.elapsed().as_millis() as u64;
    let mut known = BTreeMap::from([(snapshot_id(&first), tree_digest(&source))]);
    println!(
        "first backup: {} bytes in {full_backup_ms} ms",
        first["bytes_read"]
    );

    for round in 0..ROUNDS {
        mutate_tree(&source, &mut rng, round, 6);
        let digest = tree_digest(&source);
        let kill_after_ms = rng.random_range(0..=full_backup_ms + full_backup_ms / 10);
        let mut child = Command::new(env!("CARGO_BIN_EXE_crosscheck"))
            .args([
                "backup".as_ref(),
                source.as_os_str(),
                "--repo".as_ref(),
                repo.as_os_str(),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(kill_after_ms));
        let finished_first = child.try_wait().unwrap().is_some();
        child.kill().ok(); // SIGKILL, as kill -9.
        let status = child.wait().unwrap();
        let new_ids: Vec<String> = listed_ids(&repo)
            .into_iter()
            .filter(|id| !known.contains_key(id))
            .collect();
        assert!(new_ids.len() <= 1, "one killed backup made {new_ids:?}");
        assert!(
            !finished_first || status.success(),
            "an unkilled backup failed: {status}"
        );
        if let Some(id) = new_ids.first() {
            known.insert(id.clone(), digest);
        }
        let (temp_files, unreferenced) = check_repository(&repo, &known, scratch.path());
        println!(
            "round {round}: SIGKILL after {kill_after_ms} ms; committed: {}; leftovers: \
             {temp_files} temp files, {unreferenced} unreferenced chunks",
            !new_ids.is_empty()
        );
    }
    let last = backup(&source, &repo);
    known.insert(snapshot_id(&last), tree_digest(&source));
    check_repository(&repo, &known, scratch.path());
    let cleaned = json_ok(&[
        "fsck".as_ref(),
        "--repo".as_ref(),
        repo.as_os_str(),
        "--cleanup".as_ref(),
        "--json".as_ref(),
    ]);
    let (code, after) = fsck(&repo);
    assert_eq!(code, Some(0), "{after}");
    assert!(
        after["temp_files"].as_array().unwrap().is_empty(),
        "cleanup removed them: {cleaned} {after}"
    );
}

#[test]
fn a_repository_in_use_is_refused_with_a_clear_error_and_nothing_lost() {
    let scratch = tempfile::tempdir().unwrap();
    let (source, repo) = (scratch.path().join("source"), scratch.path().join("repo"));
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    write_tree(&source, &mut rng, 3, 64 << 10);
    let first = backup(&source, &repo);
    let args = |words: &[&str]| -> Vec<std::ffi::OsString> {
        let mut args: Vec<std::ffi::OsString> = words.iter().map(Into::into).collect();
        args.extend(["--repo".into(), repo.clone().into_os_string()]);
        args
    };
    let backup_args = args(&["backup", source.to_str().unwrap(), "--json"]);
    let cleanup_args = args(&["fsck", "--cleanup", "--json"]);
    let list_args = args(&["snapshots", "--json"]);
    let run = |args: &[std::ffi::OsString]| {
        let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        crosscheck(&args)
    };
    let refused = |output: &Output, what: &str| {
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{what}: {stderr}");
        assert!(
            stderr.contains("in use by another crosscheck process"),
            "{what}: {stderr}"
        );
    };
    // Another process holds it for writing: nobody else gets in.
    let lock = std::fs::File::options()
        .write(true)
        .open(repo.join("repository.lock"))
        .unwrap();
    lock.lock().unwrap();
    refused(&run(&backup_args), "backup beside a writer");
    refused(&run(&list_args), "snapshots beside a writer");
    lock.unlock().unwrap();
    // Another process reads it: readers share, writers wait.
    lock.lock_shared().unwrap();
    assert!(run(&list_args).status.success());
    refused(&run(&backup_args), "backup beside a reader");
    refused(&run(&cleanup_args), "cleanup beside a reader");
    drop(lock);
    // Nothing was lost or half-written: the repository is clean and usable.
    let (code, report) = fsck(&repo);
    assert_eq!(code, Some(0), "{report}");
    let again = backup(&source, &repo);
    assert_eq!(again["parent"], first["snapshot_id"], "{again}");
}

#[test]
fn a_prefix_naming_a_damaged_manifest_never_restores_another_snapshot() {
    let scratch = tempfile::tempdir().unwrap();
    let (source, repo) = (scratch.path().join("src"), scratch.path().join("repo"));
    fs::create_dir(&source).unwrap();
    // 17 snapshots: two of them share a first hex digit.
    let mut ids: Vec<String> = Vec::new();
    for round in 0..17 {
        fs::write(source.join("n"), round.to_string()).unwrap();
        ids.push(snapshot_id(&backup(&source, &repo)));
    }
    ids.sort();
    let pair = ids
        .windows(2)
        .find(|pair| pair[0][..1] == pair[1][..1])
        .expect("17 ids share a first digit");
    let (damaged, prefix) = (&pair[0], &pair[0][..1]);
    let manifest = repo.join("snapshots").join(format!("{damaged}.json"));
    let mut bytes = fs::read(&manifest).unwrap();
    bytes[10] ^= 0x01;
    fs::write(&manifest, bytes).unwrap();

    let output = restore(prefix, &scratch.path().join("out"), &repo);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("matches"),
        "ambiguous, counting the damaged one: {stderr}"
    );
    let output = restore(&damaged[..20], &scratch.path().join("out"), &repo);
    let error = json_error(&output);
    assert_eq!(output.status.code(), Some(1), "damage found: {error}");
    assert!(
        error["error"].as_str().unwrap().contains("damaged"),
        "the damage is named: {error}"
    );
    assert!(!scratch.path().join("out").exists(), "nothing restored");
}

/// A failed command run with `--json` prints one JSON object on stderr, with
/// the exit code it exits with; returns it.
fn json_error(output: &Output) -> Value {
    let stderr = String::from_utf8_lossy(&output.stderr);
    let error: Value = serde_json::from_str(stderr.trim()).unwrap_or_else(|problem| {
        panic!("stderr under --json is not one JSON object ({problem}):\n{stderr}")
    });
    assert!(error["error"].is_string(), "{error}");
    assert_eq!(
        error["exit_code"].as_i64(),
        output.status.code().map(i64::from),
        "{error}"
    );
    error
}

/// Under `--json` every kind of failure reads as JSON: a usage error clap
/// finds, a snapshot that is not there, a repository that is not there. The
/// same failures without `--json` are prose, and help is still help.
#[test]
fn failures_under_json_are_one_json_object_on_stderr() {
    let scratch = tempfile::tempdir().unwrap();
    let (source, repo) = (scratch.path().join("source"), scratch.path().join("repo"));
    write_tree(&source, &mut ChaCha8Rng::seed_from_u64(13), 2, 100);
    backup(&source, &repo);
    let target = scratch.path().join("t");
    let cases: [(Vec<&std::ffi::OsStr>, &str); 3] = [
        (
            vec!["snapshots".as_ref(), "--json".as_ref(), "--bogus".as_ref()],
            "unexpected argument '--bogus'",
        ),
        (
            vec!["restore".as_ref(), "zzzz".as_ref(), target.as_os_str()],
            "no snapshot matches",
        ),
        (
            vec!["fsck".as_ref(), "--repo".as_ref(), target.as_os_str()],
            "expected a repository directory",
        ),
    ];
    for (mut args, expected) in cases {
        if args[0] == "restore" {
            args.extend(["--repo".as_ref(), repo.as_os_str()]);
        }
        let prose = crosscheck(
            &args
                .iter()
                .copied()
                .filter(|a| *a != "--json")
                .collect::<Vec<_>>(),
        );
        let prose = String::from_utf8_lossy(&prose.stderr).into_owned();
        assert!(
            prose.starts_with("error: ") && prose.contains(expected),
            "{prose}"
        );
        if !args.contains(&"--json".as_ref()) {
            args.push("--json".as_ref());
        }
        let output = crosscheck(&args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let error = json_error(&output);
        assert!(
            error["error"].as_str().unwrap().contains(expected),
            "{error}"
        );
        assert!(output.stdout.is_empty(), "{args:?}");
    }
    let help = crosscheck(&["snapshots".as_ref(), "--help".as_ref(), "--json".as_ref()]);
    assert_eq!(help.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&help.stdout).contains("Usage:"));

    // Output that cannot be written ends as an error with exit code 2, in
    // JSON, not as a panic's prose and exit code 101.
    let full = Command::new(env!("CARGO_BIN_EXE_crosscheck"))
        .args([
            "snapshots".as_ref(),
            "--repo".as_ref(),
            repo.as_os_str(),
            "--json".as_ref(),
        ])
        .stdout(fs::File::create("/dev/full").unwrap())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&full.stderr);
    assert!(
        stderr
            .lines()
            .all(|line| serde_json::from_str::<Value>(line).is_ok()),
        "{stderr}"
    );
    let error: Value = serde_json::from_str(stderr.lines().last().unwrap()).unwrap();
    assert_eq!(full.status.code(), Some(2), "{stderr}");
    assert_eq!(error["exit_code"], 2);
    assert!(
        error["error"].as_str().unwrap().contains("No space left"),
        "{error}"
    );

    // A stderr that cannot be written loses the error's text, not its exit
    // code (writing it must not panic into exit code 101).
    let not_a_repo = tempfile::tempdir().unwrap();
    for json in [false, true] {
        let mut command = Command::new(env!("CARGO_BIN_EXE_crosscheck"));
        command.args([
            "snapshots".as_ref(),
            "--repo".as_ref(),
            not_a_repo.path().as_os_str(),
        ]);
        if json {
            command.arg("--json");
        }
        let status = command
            .stderr(fs::File::create("/dev/full").unwrap())
            .status()
            .unwrap();
        assert_eq!(status.code(), Some(2), "--json {json}");
    }
}

/// A directory that is not a repository is refused by every command that
/// reads one, and left as it was (no lock file); a source whose path is not
/// UTF-8 is refused, since its label would be ambiguous.
#[test]
fn a_non_repository_is_left_untouched_and_a_non_utf8_source_is_refused() {
    use std::os::unix::ffi::OsStrExt;
    let scratch = tempfile::tempdir().unwrap();
    let theirs = someone_elses_directory(scratch.path());
    let target = scratch.path().join("t");
    for args in [
        vec!["snapshots".as_ref(), "--repo".as_ref(), theirs.as_os_str()],
        vec!["fsck".as_ref(), "--repo".as_ref(), theirs.as_os_str()],
        vec![
            "restore".as_ref(),
            "latest".as_ref(),
            target.as_os_str(),
            "--repo".as_ref(),
            theirs.as_os_str(),
        ],
    ] {
        // Not "backup ... creates one": backup refuses a directory of
        // someone else's files too.
        let message = assert_usage_error(&args, "found no config.json there");
        assert!(!message.contains("creates one"), "{message}");
    }
    assert_untouched(&theirs);
    assert!(!target.exists());

    let source = scratch
        .path()
        .join(std::ffi::OsStr::from_bytes(b"not-utf8-\xff"));
    fs::create_dir(&source).unwrap();
    fs::write(source.join("f"), b"f").unwrap();
    let repo = scratch.path().join("repo");
    let args = [
        "backup".as_ref(),
        source.as_os_str(),
        "--repo".as_ref(),
        repo.as_os_str(),
    ];
    assert_usage_error(&args, "whose path is UTF-8");
    assert!(!repo.exists(), "no repository made");
}

/// `restore latest` restores the newest snapshot, and with `--source` the
/// newest of that directory; a source with no snapshot, or `--source` with
/// an id, is a usage error that restores nothing.
#[test]
fn restore_latest_takes_the_newest_snapshot_or_the_newest_of_a_source() {
    let scratch = tempfile::tempdir().unwrap();
    let repo = scratch.path().join("repo");
    let (first, second) = (scratch.path().join("first"), scratch.path().join("second"));
    write_tree(&first, &mut ChaCha8Rng::seed_from_u64(14), 4, 5000);
    write_tree(&second, &mut ChaCha8Rng::seed_from_u64(15), 3, 5000);
    let old_first = snapshot_id(&backup(&first, &repo));
    // Snapshot times are in milliseconds: each backup is a later one.
    std::thread::sleep(std::time::Duration::from_millis(5));
    fs::write(first.join("later"), b"written after the first backup").unwrap();
    let new_first = snapshot_id(&backup(&first, &repo));
    std::thread::sleep(std::time::Duration::from_millis(5));
    let newest = snapshot_id(&backup(&second, &repo));
    assert_ne!(old_first, new_first);
    let restore_latest = |target: &Path, source: Option<&Path>| {
        let mut args = vec![
            "restore".as_ref(),
            "latest".as_ref(),
            target.as_os_str(),
            "--repo".as_ref(),
            repo.as_os_str(),
            "--json".as_ref(),
        ];
        args.extend(
            source
                .map(|source| ["--source".as_ref(), source.as_os_str()])
                .into_iter()
                .flatten(),
        );
        crosscheck(&args)
    };
    for (source, expected_id, tree) in
        [(None, &newest, &second), (Some(&first), &new_first, &first)]
    {
        let target = scratch.path().join(format!("out-{}", expected_id));
        let output = restore_latest(&target, source.map(PathBuf::as_path));
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let report: Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(report["snapshot_id"].as_str(), Some(expected_id.as_str()));
        assert_eq!(tree_digest(&target), tree_digest(tree));
    }
    let none = scratch.path().join("out-none");
    let output = restore_latest(&none, Some(&scratch.path().join("never-backed-up")));
    assert_eq!(output.status.code(), Some(2));
    let error = json_error(&output);
    let error = error["error"].as_str().unwrap();
    assert!(error.contains("expected a snapshot of"), "{error}");
    let held = format!(
        "it holds snapshots of {}, {}",
        label(&first),
        label(&second)
    );
    assert!(error.contains(&held), "the labels there are named: {error}");
    let output = crosscheck(&[
        "restore".as_ref(),
        old_first[..12].as_ref(),
        none.as_os_str(),
        "--repo".as_ref(),
        repo.as_os_str(),
        "--source".as_ref(),
        first.as_os_str(),
    ]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("only with `latest`"));
    assert!(!none.exists(), "nothing restored");

    // The source directory gone, named relatively and untidily: its label
    // is still found.
    let (first_label, gone) = (label(&first), scratch.path().join("gone"));
    fs::rename(&first, &gone).unwrap();
    let untidy = scratch.path().join("second/../first/.");
    let target = scratch.path().join("out-gone");
    let output = restore_latest(&target, Some(&untidy));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(tree_digest(&target), tree_digest(&gone));

    // The newest manifest damaged: the newest sound one is restored, the
    // damaged one named, and the exit code says damage was found.
    let manifest = repo.join("snapshots").join(format!("{newest}.json"));
    let mut bytes = fs::read(&manifest).unwrap();
    bytes[5] ^= 0x01;
    fs::write(&manifest, bytes).unwrap();
    let target = scratch.path().join("out-past-damage");
    let output = restore_latest(&target, None);
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["snapshot_id"].as_str(), Some(new_first.as_str()));
    assert_eq!(report["passed_over"], serde_json::json!([newest]));
    assert_eq!(report["label"].as_str(), Some(first_label.as_str()));
    assert_eq!(tree_digest(&target), tree_digest(&gone));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    let error: Value = serde_json::from_str(last).unwrap();
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(error["exit_code"], 1);
    assert!(
        error["error"].as_str().unwrap().contains(&newest),
        "{error}"
    );
    // The listing leaves the damaged one out, and says so.
    let listed = crosscheck(&[
        "snapshots".as_ref(),
        "--repo".as_ref(),
        repo.as_os_str(),
        "--json".as_ref(),
    ]);
    assert_eq!(
        serde_json::from_slice::<Value>(&listed.stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let stderr = String::from_utf8_lossy(&listed.stderr);
    assert!(
        stderr.contains("1 entries under snapshots/ are left out"),
        "{stderr}"
    );
    // Its only snapshot damaged, a source has none to restore: exit 1 too.
    let target = scratch.path().join("out-none-sound");
    let output = restore_latest(&target, Some(&second));
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("nothing was restored"));
    assert!(!target.exists(), "nothing restored");
}

/// A source's label, as `backup` records it.
fn label(source: &Path) -> String {
    source.canonicalize().unwrap().to_str().unwrap().to_string()
}

/// An entry that cannot be read (here a name that is not UTF-8, which a
/// manifest cannot hold; as root, permissions would not stop a read) leaves
/// the snapshot incomplete: it is committed with everything else, and the
/// backup exits 3 so a script notices. A special file alone does not (the
/// round-trip test backs up a FIFO and exits 0).
#[test]
fn a_backup_that_could_not_read_an_entry_commits_the_rest_and_exits_3() {
    use std::os::unix::ffi::OsStrExt;
    let scratch = tempfile::tempdir().unwrap();
    let (source, repo) = (scratch.path().join("source"), scratch.path().join("repo"));
    fs::create_dir_all(&source).unwrap();
    fs::write(source.join("kept.txt"), b"kept").unwrap();
    let bad_name = std::ffi::OsStr::from_bytes(b"not-utf8-\xff");
    fs::write(source.join(bad_name), b"lost").unwrap();

    let output = crosscheck(&[
        "backup".as_ref(),
        source.as_os_str(),
        "--repo".as_ref(),
        repo.as_os_str(),
        "--json".as_ref(),
    ]);
    let error = json_error(&output);
    assert_eq!(output.status.code(), Some(3), "{error}");
    assert!(
        error["error"]
            .as_str()
            .unwrap()
            .contains("incomplete: 1 entries could not be read"),
        "{error}"
    );
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["files"], 1, "{report}");
    let skipped = report["skipped"].as_array().unwrap();
    assert_eq!(skipped.len(), 1, "{report}");
    assert_eq!(skipped[0]["unreadable"], true, "{report}");

    let id = snapshot_id(&report);
    assert_eq!(
        listed_ids(&repo),
        vec![id.clone()],
        "the snapshot is committed"
    );
    let target = scratch.path().join("restored");
    let output = restore(&id, &target, &repo);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(fs::read(target.join("kept.txt")).unwrap(), b"kept");
}
