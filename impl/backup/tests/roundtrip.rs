//! restore(backup(tree)) == tree, for random trees, through both pipelines.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use backup::{ChunkerConfig, Pipeline, RepoConfig};
use proptest::prelude::*;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

const DIRS: [&str; 4] = ["", "a", "a/b", "c"];
const MODES: [u32; 4] = [0o644, 0o600, 0o755, 0o444];

#[derive(Debug, Clone)]
struct FileSpec {
    dir_index: usize,
    name_index: usize,
    size_bytes: usize,
    content_seed: u64,
    mode_index: usize,
}

fn file_spec() -> impl Strategy<Value = FileSpec> {
    let size = prop_oneof![
        Just(0_usize),
        1..5_000_usize,
        5_000..300_000_usize,
        1_000_000..3_000_000_usize,
    ];
    // Few seeds, so identical files (in-run dedup) come up often.
    (0..DIRS.len(), 0..5_usize, size, 0..6_u64, 0..MODES.len()).prop_map(
        |(dir_index, name_index, size_bytes, content_seed, mode_index)| FileSpec {
            dir_index,
            name_index,
            size_bytes,
            content_seed,
            mode_index,
        },
    )
}

fn build_tree(root: &Path, files: &[FileSpec], with_symlink: bool) {
    for dir in DIRS.iter().filter(|dir| !dir.is_empty()) {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    for file in files {
        let path = root
            .join(DIRS[file.dir_index])
            .join(format!("file{}", file.name_index));
        let mut bytes = vec![0; file.size_bytes];
        ChaCha8Rng::seed_from_u64(file.content_seed).fill_bytes(&mut bytes);
        std::fs::write(&path, &bytes).unwrap();
        let mode = MODES[file.mode_index];
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    if with_symlink {
        std::os::unix::fs::symlink("../../outside", root.join("a/b/link")).unwrap();
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn restore_of_backup_is_the_same_tree(
        files in proptest::collection::vec(file_spec(), 0..8),
        with_symlink in any::<bool>(),
        parallel in any::<bool>(),
    ) {
        let source = tempfile::tempdir().unwrap();
        build_tree(source.path(), &files, with_symlink);
        let chunker = ChunkerConfig::with_average(16 * 1024);
        let config = RepoConfig { chunker, ..RepoConfig::default() };
        let (_repo_dir, repository) = common::repository(config);
        let pipeline = if parallel {
            Pipeline::Parallel { worker_threads: 2, in_flight_bytes_max: 4 << 20 }
        } else {
            Pipeline::Inline
        };
        let report = common::backup_dir(&repository, source.path(), pipeline);
        let total_bytes: u64 = files.iter().map(|f| f.size_bytes as u64).sum();
        prop_assert!(report.stats.bytes_read <= total_bytes);
        prop_assert!(report.stats.skipped.is_empty(), "{:?}", report.stats.skipped);

        let target = tempfile::tempdir().unwrap();
        let restored = target.path().join("restored");
        let restoring = backup::restore::restore(&repository, &report.snapshot, &restored);
        let stats = pollster::block_on(restoring).unwrap();
        prop_assert_eq!(stats.bytes_written, report.stats.bytes_read);
        prop_assert_eq!(common::describe_tree(&restored), common::describe_tree(source.path()));
        let report = backup::fsck(&repository, &mut |_, _| ()).unwrap();
        prop_assert!(report.is_clean(), "fsck: {:?}", report);
    }
}
