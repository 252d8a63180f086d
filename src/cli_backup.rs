//! `backup`, `restore`, `snapshots`, `fsck` and `bench backup`: the backup
//! service on a real, fsync'd repository directory.

use std::path::PathBuf;

use anyhow::bail;
use clap::Args;

use crate::verdict::Verdict;

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// The directory to back up.
    pub source: PathBuf,
    /// The repository directory (created on first use).
    #[arg(long)]
    pub repo: PathBuf,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The snapshot id (a unique prefix is enough).
    pub snapshot: String,
    /// The directory to restore into.
    pub target: PathBuf,
    #[arg(long)]
    pub repo: PathBuf,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct SnapshotsArgs {
    #[arg(long)]
    pub repo: PathBuf,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct FsckArgs {
    #[arg(long)]
    pub repo: PathBuf,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct BenchBackupArgs {
    #[arg(long)]
    pub json: bool,
}

pub fn backup(_args: BackupArgs) -> anyhow::Result<Verdict> {
    bail!("`backup` is not built yet")
}

pub fn restore(_args: RestoreArgs) -> anyhow::Result<Verdict> {
    bail!("`restore` is not built yet")
}

pub fn snapshots(_args: SnapshotsArgs) -> anyhow::Result<Verdict> {
    bail!("`snapshots` is not built yet")
}

pub fn fsck(_args: FsckArgs) -> anyhow::Result<Verdict> {
    bail!("`fsck` is not built yet")
}

pub fn bench(_args: BenchBackupArgs) -> anyhow::Result<Verdict> {
    bail!("`bench backup` is not built yet")
}
