//! `migrate` and `bench migration`: the fixed migration between two real
//! embedded databases.

use anyhow::bail;
use clap::Args;

use crate::verdict::Verdict;

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// Store X, e.g. `sqlite:///path/x.db` or `redb:///path/x.redb`.
    #[arg(long)]
    pub from: String,
    /// Store Y, same forms as --from.
    #[arg(long)]
    pub to: String,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct BenchMigrationArgs {
    #[arg(long)]
    pub json: bool,
}

pub fn migrate(_args: MigrateArgs) -> anyhow::Result<Verdict> {
    bail!("`migrate` is not built yet")
}

pub fn bench(_args: BenchMigrationArgs) -> anyhow::Result<Verdict> {
    bail!("`bench migration` is not built yet")
}
