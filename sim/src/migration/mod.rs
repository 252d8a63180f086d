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
//! [`coordinator_node`] the phase machine; [`cluster`] one seeded run; [`oracles`] judges
//! it. Not yet: scripted schedules replaying the model checker's naive counterexamples
//! step by step (issue 5, "model → code"); the seeded runs find the same four failures.

pub mod cluster;
pub mod coordinator_node;
pub mod messages;
pub mod nodes;
pub mod oracles;
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
