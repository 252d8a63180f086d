//! `sim`, `replay` and `bench sim`: seeded simulation runs of the real code.

use anyhow::bail;
use clap::Args;

use crate::verdict::Verdict;

#[derive(Debug, Args)]
pub struct SimArgs {
    /// The scenario: `backup` or `migration`.
    pub scenario: String,
    #[arg(long)]
    pub variant: Option<String>,
    /// How many seeds to run.
    #[arg(long, default_value_t = 1000)]
    pub seeds: u64,
    /// The first seed; seeds run from here upward.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Worker threads, each running whole seeds.
    #[arg(long)]
    pub jobs: Option<usize>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    pub scenario: String,
    #[arg(long)]
    pub seed: u64,
    #[arg(long)]
    pub variant: Option<String>,
}

#[derive(Debug, Args)]
pub struct BenchSimArgs {
    #[arg(long)]
    pub json: bool,
}

pub fn sim(_args: SimArgs) -> anyhow::Result<Verdict> {
    bail!("`sim` is not built yet")
}

pub fn replay(_args: ReplayArgs) -> anyhow::Result<Verdict> {
    bail!("`replay` is not built yet")
}

pub fn bench(_args: BenchSimArgs) -> anyhow::Result<Verdict> {
    bail!("`bench sim` is not built yet")
}
