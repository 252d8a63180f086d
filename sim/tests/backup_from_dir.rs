//! The backup scenario over a real directory (`--from-dir`): a seed and a directory fix
//! the run, the correct variant passes, and the planted `naive` bug is still caught.

use std::path::Path;

use sim::backup::BackupScenario;
use sim::backup::directory::{DirectoryBase, DirectoryLimits};
use sim::runner::{BatchSummary, CI_BASE_SEED, Scenario, hunt_first_failure, run_batch, run_seed};

const JOBS: usize = 2;

/// A small tree of text and binary files, the kind a user would back up.
fn write_tree(root: &Path) {
    let text: String = (0..120)
        .map(|line| format!("line {line}: the quick brown fox jumps over the lazy dog\n"))
        .collect();
    let binary: Vec<u8> = (0..7_000_u32).map(|i| (i * 7919 % 251) as u8).collect();
    std::fs::create_dir_all(root.join("src/nested")).unwrap();
    std::fs::write(root.join("README.md"), &text).unwrap();
    std::fs::write(root.join("src/lib.rs"), text.replace("fox", "cat")).unwrap();
    std::fs::write(root.join("src/nested/data.bin"), &binary).unwrap();
    std::fs::write(root.join("notes.txt"), &text[..1_000]).unwrap();
}

fn scenario_over_tree() -> (tempfile::TempDir, BackupScenario) {
    let dir = tempfile::tempdir().unwrap();
    write_tree(dir.path());
    let base = DirectoryBase::read(dir.path(), DirectoryLimits::default()).unwrap();
    assert_eq!(base.files.len(), 4, "{base}");
    (dir, BackupScenario::from_directory(base))
}

#[test]
fn a_seed_over_a_directory_replays_bit_for_bit_and_logs_the_directory() {
    let (dir, scenario) = scenario_over_tree();
    let first = run_seed(&scenario, CI_BASE_SEED, "optimistic");
    let second = run_seed(&scenario, CI_BASE_SEED, "optimistic");
    assert_eq!(first.events, second.events);
    let start = &first.events[0].detail;
    let root = std::fs::canonicalize(dir.path()).unwrap();
    assert!(start.contains(&format!("workload_dir={root:?}")), "{start}");
    assert!(start.contains("workload_dir_files=4"), "{start}");
    let command = first.replay_command("backup");
    assert!(
        command.ends_with(&format!(" --from-dir {}", root.display())),
        "{command}"
    );
    let seeded = run_seed(&BackupScenario::default(), CI_BASE_SEED, "optimistic");
    assert_ne!(
        first.trace_hash, seeded.trace_hash,
        "the directory changed nothing"
    );
}

#[test]
fn optimistic_passes_a_batch_of_seeds_over_a_directory() {
    let (_dir, scenario) = scenario_over_tree();
    let outcomes = run_batch(&scenario, "optimistic", CI_BASE_SEED, 24, JOBS, &|_| {});
    let summary = BatchSummary::of(&outcomes);
    let failures: Vec<String> = outcomes
        .iter()
        .filter(|outcome| !outcome.passed())
        .map(|outcome| outcome.failure_report("backup"))
        .collect();
    assert_eq!(summary.seeds_run, 24);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The index marks a chunk present when first asked; real files must not hide that.
#[test]
fn naive_index_is_still_caught_over_a_directory() {
    let (_dir, scenario) = scenario_over_tree();
    assert!(scenario.is_buggy("naive"));
    let (seeds_run, failure) = hunt_first_failure(&scenario, "naive", CI_BASE_SEED, 1_000, JOBS);
    let failure = failure.unwrap_or_else(|| panic!("naive not caught in {seeds_run} seeds"));
    println!("naive over a directory caught after {seeds_run} seed(s)");
    let report = failure.failure_report("backup");
    assert!(report.contains("--from-dir"), "{report}");
    assert!(
        failure
            .violations
            .iter()
            .all(|violation| !violation.liveness)
    );
}
