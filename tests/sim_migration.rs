//! The migration scenario under CI's fixed batch of seeds: `fixed` passes every seed,
//! `naive` is caught with each of its failures named, and a seed replays bit for bit.
//!
//! Seeds start at [`CI_BASE_SEED`]; `CROSSCHECK_SIM_SEEDS=N` runs N seeds of `fixed`.

use std::collections::BTreeMap;

use sim::migration::MigrationScenario;
use sim::migration::oracles::FAILURE_KINDS;
use sim::runner::{
    BatchSummary, CI_BASE_SEED, Scenario, check_determinism, ci_seed_count, run_batch, run_seed,
};

const JOBS: usize = 2;
/// `naive` must show every kind of failure within this many seeds.
const CATCH_LIMIT_SEEDS: u64 = 1_000;
/// Seeds per round of the naive hunt.
const ROUND_SEEDS: u64 = 20;

#[test]
fn fixed_passes_every_seed_of_the_batch() {
    let scenario = MigrationScenario;
    let seed_count = ci_seed_count(60);
    let outcomes = run_batch(&scenario, "fixed", CI_BASE_SEED, seed_count, JOBS, &|_| {});
    let summary = BatchSummary::of(&outcomes);
    assert!(
        summary.seeds_run > 0,
        "a simulation test that ran zero seeds proves nothing"
    );
    assert_eq!(summary.seeds_run, seed_count);
    let failures: Vec<String> = outcomes
        .iter()
        .filter(|outcome| !outcome.passed())
        .map(|outcome| outcome.failure_report(scenario.name()))
        .collect();
    assert!(
        failures.is_empty(),
        "fixed: {summary:?}\n{}",
        failures.join("\n")
    );
    println!(
        "fixed: {} seeds passed, {:.1} s simulated",
        summary.seeds_run,
        summary.simulated_total.as_secs_f64()
    );
}

/// Runs naive seeds until every failure kind has shown, and returns for each kind the
/// number of seeds run when it first showed.
fn hunt_naive_kinds() -> (u64, BTreeMap<&'static str, (u64, u64)>) {
    let scenario = MigrationScenario;
    let mut first_seen: BTreeMap<&'static str, (u64, u64)> = BTreeMap::new();
    let mut seeds_run = 0;
    while seeds_run < CATCH_LIMIT_SEEDS && first_seen.len() < FAILURE_KINDS.len() {
        let first = CI_BASE_SEED + seeds_run;
        let outcomes = run_batch(&scenario, "naive", first, ROUND_SEEDS, JOBS, &|_| {});
        for outcome in &outcomes {
            for violation in &outcome.violations {
                if let Some(kind) = FAILURE_KINDS.iter().find(|kind| **kind == violation.oracle) {
                    first_seen
                        .entry(kind)
                        .or_insert((outcome.seed - CI_BASE_SEED + 1, outcome.seed));
                }
            }
        }
        seeds_run += ROUND_SEEDS;
    }
    (seeds_run, first_seen)
}

#[test]
fn naive_shows_every_failure_kind_within_a_thousand_seeds() {
    let (seeds_run, first_seen) = hunt_naive_kinds();
    for (kind, (seeds, seed)) in &first_seen {
        println!("naive {kind}: first after {seeds} seed(s), at seed {seed}");
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
