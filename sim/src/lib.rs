//! The deterministic simulation harness.
//!
//! Real `impl/` code runs as madsim nodes; every random choice flows from the
//! run's seed, so a failing seed replays bit for bit.
//!
//! Code map: [`disk`] is the crash-aware simulated disk; [`config`] draws a seed's fault
//! mix; [`trace`] records events in the model's vocabulary; [`rpc`] is the retrying
//! client side of the simulated network; [`runner`] runs seeds on fresh threads and
//! runtimes, generic over the [`runner::Scenario`].

#[cfg(not(madsim))]
compile_error!(
    "crosscheck-sim must be built in simulation mode (--cfg madsim). \
     .cargo/config.toml sets it; an exported RUSTFLAGS replaces that setting: \
     unset RUSTFLAGS, or add `--cfg madsim` to it."
);

pub mod backup;
pub mod config;
pub mod disk;
pub mod faults;
pub mod history;
pub mod migration;
pub mod rpc;
pub mod runner;
pub mod trace;
