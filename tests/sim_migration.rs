//! The migration scenario under CI's fixed batch of seeds: `fixed` passes every seed,
//! `naive` is caught with each of its failures named, and a seed replays bit for bit.
//!
//! Seeds start at [`CI_BASE_SEED`]; `CROSSCHECK_SIM_SEEDS=N` runs N seeds of `fixed`.

use sim::migration::oracles::FAILURE_KINDS;
use sim::migration::{MigrationScenario, hunt_failure_kinds, verify_checks};
use sim::runner::{
    CI_BASE_SEED, Scenario, assert_every_ci_seed_passes, check_determinism, run_seed,
};

const JOBS: usize = 2;
/// `naive` must show every kind of failure within this many seeds.
const CATCH_LIMIT_SEEDS: u64 = 1_000;

#[test]
fn fixed_passes_every_seed_of_the_batch() {
    assert_every_ci_seed_passes(&MigrationScenario, "fixed", 60, JOBS);
}

#[test]
fn naive_shows_every_failure_kind_within_a_thousand_seeds() {
    let (seeds_run, first_seen) = hunt_failure_kinds(CATCH_LIMIT_SEEDS, JOBS);
    for (kind, seeds) in &first_seen {
        println!("naive {kind}: first after {seeds} seed(s)");
    }
    let missing: Vec<&&str> = FAILURE_KINDS
        .iter()
        .filter(|kind| !first_seen.contains_key(**kind))
        .collect();
    assert!(
        missing.is_empty(),
        "naive never showed {missing:?} in {seeds_run} seeds (found {first_seen:?})"
    );
}

#[test]
fn the_verify_checks_all_pass() {
    let checks = verify_checks(20, JOBS);
    assert_eq!(checks.len(), 3);
    for check in &checks {
        println!("{}: {} ({})", check.check, check.passed, check.detail);
        assert!(check.passed, "{check:?}");
    }
}

#[test]
fn a_seed_replays_bit_for_bit_in_fresh_runtimes() {
    let scenario = MigrationScenario;
    for &variant in scenario.variants() {
        for seed in CI_BASE_SEED..CI_BASE_SEED + 2 {
            let hash = check_determinism(&scenario, seed, variant)
                .unwrap_or_else(|divergence| panic!("{variant}: {divergence}"));
            assert_eq!(hash.len(), 16);
        }
    }
    let once = run_seed(&scenario, CI_BASE_SEED, "naive");
    assert!(
        once.event_count > 20,
        "a run this short tests nothing: {}",
        once.event_count
    );
}
