//! The backup scenario under CI's fixed batch of seeds: correct variants pass every seed,
//! planted bugs are caught, and a seed replays bit for bit.
//!
//! Seeds start at [`CI_BASE_SEED`]; `CROSSCHECK_SIM_SEEDS=N` runs N per correct variant.

use sim::backup::BackupScenario;
use sim::runner::{
    CI_BASE_SEED, Scenario, assert_every_ci_seed_passes, check_determinism, hunt_first_failure,
    run_seed,
};

const JOBS: usize = 2;
/// A planted bug must show within this many seeds.
const CATCH_LIMIT_SEEDS: u64 = 1_000;

fn assert_every_seed_passes(variant: &str, default_seeds: u64) {
    assert_every_ci_seed_passes(&BackupScenario::default(), variant, default_seeds, JOBS);
}

#[test]
fn optimistic_passes_every_seed_of_the_batch() {
    assert_every_seed_passes("optimistic", 150);
}

#[test]
fn pessimistic_passes_every_seed_of_the_batch() {
    assert_every_seed_passes("pessimistic", 150);
}

fn assert_caught(variant: &str, expected_oracles: &[&str]) {
    let scenario = BackupScenario::default();
    assert!(scenario.is_buggy(variant));
    let (seeds_run, failure) =
        hunt_first_failure(&scenario, variant, CI_BASE_SEED, CATCH_LIMIT_SEEDS, JOBS);
    let failure = failure.unwrap_or_else(|| {
        panic!("{variant} was not caught in {seeds_run} seeds: the oracles or faults are too weak")
    });
    println!(
        "{variant} caught after {seeds_run} seed(s):\n{}",
        failure.failure_report("backup")
    );
    let oracles: Vec<&str> = failure
        .violations
        .iter()
        .map(|v| v.oracle.as_str())
        .collect();
    assert!(
        oracles
            .iter()
            .any(|oracle| expected_oracles.contains(oracle)),
        "{variant} was caught by {oracles:?}, expected one of {expected_oracles:?}"
    );
    assert!(
        failure
            .violations
            .iter()
            .all(|violation| !violation.liveness)
    );
}

/// The index marks a chunk present when first asked: another client then commits a
/// manifest naming bytes nobody stored yet.
#[test]
fn naive_index_is_caught_within_a_thousand_seeds() {
    assert_caught(
        "naive",
        &[
            "CommittedRestorable",
            "RestoresIdentical",
            "IndexOnlyListsStored",
        ],
    );
}

/// The chunk stores acknowledge uploads without making them durable: only the disk's
/// crash model (a power cut loses unsynced packs) can see it.
#[test]
fn store_acknowledging_before_fsync_is_caught_within_a_thousand_seeds() {
    assert_caught(
        "ack-before-fsync",
        &["RestoresIdentical", "IndexOnlyListsStored"],
    );
}

#[test]
fn every_variant_is_deterministic_across_fresh_runtimes() {
    let scenario = BackupScenario::default();
    for &variant in scenario.variants() {
        for seed in CI_BASE_SEED..CI_BASE_SEED + 3 {
            if let Err(divergence) = check_determinism(&scenario, seed, variant) {
                panic!("{variant}: {divergence}");
            }
        }
    }
}

#[test]
fn replaying_a_failing_seed_twice_gives_the_identical_trace() {
    let scenario = BackupScenario::default();
    let first = run_seed(&scenario, CI_BASE_SEED, "naive");
    let second = run_seed(&scenario, CI_BASE_SEED, "naive");
    assert!(
        first.event_count > 50,
        "a run should have a real trace: {}",
        first.event_count
    );
    assert_eq!(first.trace_hash, second.trace_hash);
    assert_eq!(first.events, second.events);
    assert_eq!(first.violations, second.violations);
    let last = first.events.last().expect("a trace");
    if !first.passed() {
        assert_eq!(
            last.word,
            sim::trace::Word::Violation,
            "a failing trace ends in its failure"
        );
    }
}

/// Bit flips reach index disks too: a shard that restarts over a flipped segment must
/// drop it (its checksum fails) and the seed must still pass every oracle.
#[test]
fn a_flipped_index_segment_is_dropped_and_the_seed_still_passes() {
    let scenario = BackupScenario::default();
    let hunted_seeds_max = 2_000;
    let found = (CI_BASE_SEED..CI_BASE_SEED + hunted_seeds_max).find_map(|seed| {
        let config = sim::config::SimConfig::from_seed(seed);
        if !config.kill_restart || config.disk.corruption_rate == 0.0 {
            return None; // No crash, no flip: skip the run.
        }
        let outcome = run_seed(&scenario, seed, "optimistic");
        let dropped = outcome.events.iter().any(|event| {
            event.node.starts_with("index") && event.detail.starts_with("dropped: index segment")
        });
        dropped.then_some(outcome)
    });
    let outcome = found.unwrap_or_else(|| {
        panic!("no seed in {hunted_seeds_max} flipped an index segment: the fault never fires")
    });
    println!("seed {} dropped a damaged index segment", outcome.seed);
    assert!(outcome.passed(), "{}", outcome.failure_report("backup"));
}
