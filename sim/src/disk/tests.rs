//! Each fault of the simulated disk, pinned: what a crash keeps, loses, tears and flips.

use super::*;
use backup::disk::write_atomic;

fn faults(keep: f64, torn: f64) -> DiskFaults {
    DiskFaults {
        pending_keep_rate: keep,
        torn_write_rate: torn,
        ..DiskFaults::none()
    }
}

#[test]
fn unsynced_write_is_gone_after_a_crash_that_drops_it() {
    let disk = SimDisk::new(1, faults(0.0, 0.0));
    disk.write("a/b", b"hello").unwrap();
    assert_eq!(disk.read("a/b").unwrap(), b"hello");
    let report = disk.crash();
    assert_eq!(report.pending_ops_lost, 1);
    assert_eq!(
        disk.read("a/b").unwrap_err().kind(),
        io::ErrorKind::NotFound
    );
    assert!(disk.list("a").unwrap().is_empty());
}

#[test]
fn fsynced_file_without_directory_fsync_loses_its_name() {
    let disk = SimDisk::new(2, faults(0.0, 0.0));
    disk.write("d/f", b"data").unwrap();
    disk.fsync("d/f").unwrap();
    disk.crash();
    assert!(
        !disk.exists("d/f").unwrap(),
        "the creation was never made durable"
    );
}

#[test]
fn file_and_directory_fsync_survive_every_crash() {
    let disk = SimDisk::new(3, faults(0.0, 1.0));
    disk.write("d/f", b"data").unwrap();
    disk.fsync("d/f").unwrap();
    disk.fsync_dir("d").unwrap();
    for _ in 0..5 {
        disk.crash();
        assert_eq!(disk.read("d/f").unwrap(), b"data");
    }
}

#[test]
fn keep_rate_one_keeps_every_pending_operation() {
    let disk = SimDisk::new(4, faults(1.0, 0.0));
    disk.write("x", b"1").unwrap();
    disk.write("y", b"2").unwrap();
    disk.rename("y", "z").unwrap();
    let report = disk.crash();
    assert_eq!((report.pending_ops_kept, report.pending_ops_lost), (3, 0));
    assert_eq!(
        disk.list("").unwrap(),
        vec!["x".to_string(), "z".to_string()]
    );
    assert_eq!(disk.read("z").unwrap(), b"2");
}

#[test]
fn overwrite_in_flight_at_a_crash_can_be_torn_to_a_prefix() {
    let mut torn_seen = 0;
    for seed in 0..50 {
        let disk = SimDisk::new(seed, faults(0.0, 1.0));
        disk.write("f", b"old contents").unwrap();
        disk.fsync("f").unwrap();
        disk.fsync_dir("").unwrap();
        let new = b"brand new contents, longer than before";
        disk.write("f", new).unwrap();
        let report = disk.crash();
        assert_eq!(report.writes_torn, 1, "seed {seed}");
        let after = disk.read("f").unwrap();
        assert!(
            new.starts_with(&after),
            "seed {seed}: {after:?} is not a prefix"
        );
        torn_seen += usize::from(after.len() < new.len());
    }
    assert!(
        torn_seen > 40,
        "almost every tear should cut something off: {torn_seen}/50"
    );
}

/// `write_atomic` is four steps; a crash after any prefix of them, with any mix of kept,
/// lost and torn pending operations, must leave the old contents or the new, never a mix.
#[test]
fn write_atomic_is_old_or_new_after_a_crash_at_every_step() {
    let (old, new) = (
        b"old version".to_vec(),
        b"the new version of the file".to_vec(),
    );
    let mut outcomes = std::collections::BTreeSet::new();
    for seed in 0..200u64 {
        for steps_done in 0..=4 {
            let disk = SimDisk::new(seed * 8 + steps_done, faults(0.5, 0.5));
            write_atomic(&disk, "dir/file", &old).unwrap();
            let temp = backup::disk::temp_path_for("dir/file");
            let steps: [&dyn Fn() -> io::Result<()>; 4] = [
                &|| disk.write(&temp, &new),
                &|| disk.fsync(&temp),
                &|| disk.rename(&temp, "dir/file"),
                &|| disk.fsync_dir("dir"),
            ];
            steps
                .iter()
                .take(steps_done as usize)
                .for_each(|step| step().unwrap());
            disk.crash();
            let after = disk.read("dir/file").unwrap();
            assert!(
                after == old || after == new,
                "seed {seed} step {steps_done}: {after:?}"
            );
            if steps_done == 4 {
                assert_eq!(after, new, "a completed write_atomic is durable");
            }
            outcomes.insert((steps_done, after == new));
        }
    }
    assert!(
        outcomes.contains(&(3, true)) && outcomes.contains(&(3, false)),
        "{outcomes:?}"
    );
}

#[test]
fn a_crash_can_flip_one_bit_at_rest_and_says_where() {
    let disk = SimDisk::new(
        5,
        DiskFaults {
            corruption_rate: 1.0,
            ..DiskFaults::none()
        },
    );
    let original = vec![0u8; 64];
    write_atomic(&disk, "chunk", &original).unwrap();
    let report = disk.crash();
    let (path, bit) = report.corrupted.expect("rate 1 always corrupts");
    assert_eq!(path, "chunk");
    let after = disk.read("chunk").unwrap();
    let flipped: u32 = after
        .iter()
        .zip(&original)
        .map(|(a, b)| (a ^ b).count_ones())
        .sum();
    assert_eq!(flipped, 1);
    assert_eq!(after[bit / 8] >> (bit % 8) & 1, 1);
    assert_eq!(disk.corrupted_paths(), vec!["chunk".to_string()]);
}

#[test]
fn injected_io_and_fsync_errors_fail_the_call_and_make_nothing_durable() {
    let disk = SimDisk::new(
        6,
        DiskFaults {
            io_error_rate: 1.0,
            ..DiskFaults::none()
        },
    );
    assert!(
        disk.write("f", b"x")
            .unwrap_err()
            .to_string()
            .contains("injected")
    );
    assert!(!disk.exists("f").unwrap());

    let disk = SimDisk::new(
        7,
        DiskFaults {
            fsync_error_rate: 1.0,
            ..DiskFaults::none()
        },
    );
    disk.write("f", b"x").unwrap();
    assert!(disk.fsync("f").is_err());
    assert!(disk.fsync_dir("").is_err());
    disk.crash();
    assert!(
        !disk.exists("f").unwrap(),
        "a failed fsync must not make the file durable"
    );
}

#[test]
fn ignored_fsync_is_the_ack_before_sync_bug_and_a_crash_exposes_it() {
    let disk = SimDisk::new(
        8,
        DiskFaults {
            fsync_ignored: true,
            ..DiskFaults::none()
        },
    );
    write_atomic(&disk, "chunk", b"acknowledged").unwrap();
    assert_eq!(disk.read("chunk").unwrap(), b"acknowledged");
    disk.crash();
    assert!(!disk.exists("chunk").unwrap());
}

#[test]
fn remove_is_pending_until_the_directory_is_fsynced() {
    let disk = SimDisk::new(9, faults(0.0, 0.0));
    write_atomic(&disk, "d/f", b"x").unwrap();
    disk.remove("d/f").unwrap();
    assert!(!disk.exists("d/f").unwrap());
    disk.crash();
    assert!(disk.exists("d/f").unwrap(), "the unsynced removal was lost");
    disk.remove("d/f").unwrap();
    disk.fsync_dir("d").unwrap();
    disk.crash();
    assert!(!disk.exists("d/f").unwrap());
}

#[test]
fn same_seed_same_operations_same_crash() {
    let run = |seed| {
        let disk = SimDisk::new(seed, faults(0.5, 0.5));
        for index in 0..20 {
            disk.write(&format!("d/{index}"), &[index as u8; 10])
                .unwrap();
        }
        (disk.crash(), disk.list("d").unwrap())
    };
    assert_eq!(run(42), run(42));
    assert_ne!(run(42), run(43));
}

#[test]
fn list_names_direct_children_once_sorted() {
    let disk = SimDisk::new(10, DiskFaults::none());
    for path in ["a/x/1", "a/x/2", "a/y", "a.b", "b"] {
        disk.write(path, b"").unwrap();
    }
    assert_eq!(disk.list("").unwrap(), ["a", "a.b", "b"]);
    assert_eq!(disk.list("a").unwrap(), ["x", "y"]);
    assert!(disk.list("missing").unwrap().is_empty());
    assert!(disk.exists("a/x").unwrap());
}

#[test]
fn durable_copy_shows_only_synced_state_and_leaves_the_disk_alone() {
    let disk = SimDisk::new(11, faults(1.0, 0.0));
    write_atomic(&disk, "kept", b"synced").unwrap();
    disk.write("kept", b"overwritten, unsynced").unwrap();
    disk.write("fresh", b"never synced").unwrap();
    let copy = disk.durable_copy();
    assert_eq!(copy.read("kept").unwrap(), b"synced");
    assert!(!copy.exists("fresh").unwrap());
    assert_eq!(
        disk.read("kept").unwrap(),
        b"overwritten, unsynced",
        "the original is untouched"
    );
    assert!(disk.exists("fresh").unwrap());
}
