//! The deterministic simulation harness.
//!
//! Real `impl/` code runs as madsim nodes; every random choice flows from the
//! run's seed, so a failing seed replays bit for bit.

#[cfg(not(madsim))]
compile_error!(
    "crosscheck-sim must be built in simulation mode (--cfg madsim). \
     .cargo/config.toml sets it; an exported RUSTFLAGS replaces that setting: \
     unset RUSTFLAGS, or add `--cfg madsim` to it."
);

pub mod disk;
