//! The migration scenario: MIGRATION's real writer, coordinator and store logic as madsim
//! nodes, with store X and store Y each on a simulated disk.
//!
//! Variants (one per run): `fixed`, the design that must pass every seed, and `naive`
//! (unconditional writes and backfill, physical deletes, a verify that only waits), which
//! the oracles must catch with each of its failures named: `order race`, `backfill
//! overwrite`, `resurrected delete`, `crash between writes` (see [`oracles`]).
//!
//! Code map: [`store`] puts MIGRATION's `Store` and `PhaseLog` on a simulated disk;
//! [`messages`] is the RPC; [`nodes`] the store and writer nodes and the phase handshake;
//! [`coordinator_node`] the phase machine; [`cluster`] one seeded run; [`schedule`] a
//! scripted run (a model checker's counterexample, step by step); [`oracles`] judges both.

pub mod cluster;
pub mod coordinator_node;
pub mod messages;
pub mod nodes;
pub mod oracles;
pub mod schedule;
pub mod store;

use migration::Variant;

use crate::runner::{RunContext, RunFuture, Scenario};

/// Every variant, correct ones first.
pub const VARIANTS: &[&str] = &["fixed", "naive"];

/// The variant a name means, or `None` for an unknown name.
pub fn variant_named(name: &str) -> Option<Variant> {
    match name {
        "fixed" => Some(Variant::Fixed),
        "naive" => Some(Variant::Naive),
        _ => None,
    }
}

/// The migration scenario.
#[derive(Debug, Clone, Copy, Default)]
pub struct MigrationScenario;

impl Scenario for MigrationScenario {
    fn name(&self) -> &'static str {
        "migration"
    }

    fn variants(&self) -> &'static [&'static str] {
        VARIANTS
    }

    fn is_buggy(&self, variant: &str) -> bool {
        variant == "naive"
    }

    fn run<'a>(&'a self, run: RunContext) -> RunFuture<'a> {
        let variant = variant_named(&run.variant).unwrap_or_else(|| {
            panic!(
                "unknown migration variant {:?}; check_variant first",
                run.variant
            )
        });
        Box::pin(cluster::run(run, variant))
    }
}

/// One line of `crosscheck verify` for this scenario: what was checked, whether it
/// passed, and the figures. The binary turns it into its `verify::Row` (area `sim`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyCheck {
    pub check: String,
    pub passed: bool,
    pub detail: String,
}

/// The scenario's checks for `crosscheck verify`: `fixed` passes `fixed_seeds` seeds
/// from the CI base seed, `naive` shows every named failure within 1000 seeds, and a
/// seed of each variant replays bit for bit.
pub fn verify_checks(fixed_seeds: u64, jobs: usize) -> Vec<VerifyCheck> {
    use crate::runner::{BatchSummary, CI_BASE_SEED, check_determinism, run_batch};
    let scenario = MigrationScenario;
    let outcomes = run_batch(&scenario, "fixed", CI_BASE_SEED, fixed_seeds, jobs, &|_| {});
    let summary = BatchSummary::of(&outcomes);
    let mut checks = vec![VerifyCheck {
        check: "migration fixed passes every seed".into(),
        passed: summary.seeds_run > 0 && summary.seeds_failed == 0,
        detail: match summary.first_failing_seed {
            None => format!("{} seeds, every oracle held", summary.seeds_run),
            Some(seed) => format!(
                "{} of {} seeds failed {:?}; replay: {}",
                summary.seeds_failed,
                summary.seeds_run,
                summary.failures_by_oracle,
                crate::runner::replay_command("migration", seed, "fixed")
            ),
        },
    }];
    let (seeds_run, first_seen) = hunt_failure_kinds(1_000, jobs);
    let found: Vec<String> = first_seen
        .iter()
        .map(|(kind, seeds)| format!("{kind} after {seeds}"))
        .collect();
    checks.push(VerifyCheck {
        check: "migration naive shows every named failure".into(),
        passed: first_seen.len() == oracles::FAILURE_KINDS.len(),
        detail: format!("{} (in {seeds_run} seeds)", found.join(", ")),
    });
    let hashes: Result<Vec<String>, String> = VARIANTS
        .iter()
        .map(|variant| {
            check_determinism(&scenario, CI_BASE_SEED, variant)
                .map(|hash| format!("{variant}={}", &hash[..8]))
                .map_err(|divergence| divergence.to_string().replace('\n', " | "))
        })
        .collect();
    checks.push(VerifyCheck {
        check: "migration seed replays bit for bit".into(),
        passed: hashes.is_ok(),
        detail: hashes.map_or_else(|problem| problem, |hashes| hashes.join(" ")),
    });
    checks
}

/// Runs `naive` seeds from the CI base seed until every named failure has shown or
/// `seed_limit` seeds have run; returns the seeds run and, per kind found, the number of
/// seeds it took.
pub fn hunt_failure_kinds(
    seed_limit: u64,
    jobs: usize,
) -> (u64, std::collections::BTreeMap<&'static str, u64>) {
    use crate::runner::{CI_BASE_SEED, run_batch};
    const ROUND_SEEDS: u64 = 20;
    let mut first_seen = std::collections::BTreeMap::new();
    let mut seeds_run = 0;
    while seeds_run < seed_limit && first_seen.len() < oracles::FAILURE_KINDS.len() {
        let count = ROUND_SEEDS.min(seed_limit - seeds_run);
        let first = CI_BASE_SEED + seeds_run;
        for outcome in run_batch(&MigrationScenario, "naive", first, count, jobs, &|_| {}) {
            for violation in &outcome.violations {
                let kind = oracles::FAILURE_KINDS
                    .iter()
                    .find(|kind| **kind == violation.oracle);
                if let Some(kind) = kind {
                    first_seen
                        .entry(*kind)
                        .or_insert(outcome.seed - CI_BASE_SEED + 1);
                }
            }
        }
        seeds_run += count;
    }
    (seeds_run, first_seen)
}
