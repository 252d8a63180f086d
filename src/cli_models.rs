//! `check`, `explore`, `tlc` and `bench models`: stateright and TLC on the
//! same designs.

use anyhow::bail;
use clap::Args;

use crate::verdict::Verdict;

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The model: `migration` or `dedup`.
    pub model: String,
    /// The variant (each model lists its own).
    #[arg(long)]
    pub variant: Option<String>,
    /// A model parameter, NAME=VALUE; repeat for several.
    #[arg(long = "param", value_name = "NAME=VALUE")]
    pub params: Vec<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ExploreArgs {
    pub model: String,
    #[arg(long)]
    pub variant: Option<String>,
    #[arg(long = "param", value_name = "NAME=VALUE")]
    pub params: Vec<String>,
    /// The address to serve on (loopback by default).
    #[arg(long, default_value = "127.0.0.1:3000")]
    pub address: String,
}

#[derive(Debug, Args)]
pub struct TlcArgs {
    pub model: String,
    #[arg(long)]
    pub variant: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct BenchModelsArgs {
    #[arg(long)]
    pub json: bool,
}

pub fn check(_args: CheckArgs) -> anyhow::Result<Verdict> {
    bail!("`check` is not built yet")
}

pub fn explore(_args: ExploreArgs) -> anyhow::Result<Verdict> {
    bail!("`explore` is not built yet")
}

pub fn tlc(_args: TlcArgs) -> anyhow::Result<Verdict> {
    bail!("`tlc` is not built yet")
}

pub fn bench(_args: BenchModelsArgs) -> anyhow::Result<Verdict> {
    bail!("`bench models` is not built yet")
}
