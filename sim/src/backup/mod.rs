//! The backup scenario: the real `impl/backup` client and services as madsim nodes.
//!
//! Variants (one per run):
//! - `optimistic`, `pessimistic`: the two correct concurrency modes; every seed must pass;
//! - `naive`: the index marks a chunk present when first asked (ENGINE's planted bug);
//! - `ack-before-fsync`: optimistic, but the chunk stores' fsyncs do nothing, as if the
//!   store acknowledged an upload before syncing it. Only the disk's crash model can see
//!   it: without a power cut the bytes are right there.
//!
//! The workload is drawn from the seed alone, or from the seed over a real directory
//! read before the run ([`directory::DirectoryBase`], `--from-dir`).

pub mod cluster;
pub mod directory;
pub mod messages;
pub mod oracles;
pub mod servers;
pub mod service;
pub mod workload;

use std::sync::Arc;

use backup::service::ConcurrencyMode;

use crate::runner::{RunContext, RunFuture, Scenario};
use cluster::{ClusterShape, VariantSettings};
use directory::DirectoryBase;

/// Every variant, correct ones first.
pub const VARIANTS: &[&str] = &["optimistic", "pessimistic", "naive", "ack-before-fsync"];

/// The backup scenario on a cluster of the given shape.
#[derive(Debug, Clone, Default)]
pub struct BackupScenario {
    pub shape: ClusterShape,
    /// A real directory the workload starts from; `None` draws every byte from the seed.
    pub base: Option<Arc<DirectoryBase>>,
}

impl BackupScenario {
    /// The standard cluster over the files of `base`.
    pub fn from_directory(base: DirectoryBase) -> Self {
        Self {
            base: Some(Arc::new(base)),
            ..Self::default()
        }
    }
}

/// What a variant name means, or `None` for an unknown name.
pub fn variant_settings(variant: &str) -> Option<VariantSettings> {
    let (mode, stores_ignore_fsync) = match variant {
        "optimistic" => (ConcurrencyMode::Optimistic, false),
        "pessimistic" => (
            ConcurrencyMode::Pessimistic {
                lease_ms: cluster::LEASE_MS,
            },
            false,
        ),
        "naive" => (ConcurrencyMode::Naive, false),
        "ack-before-fsync" => (ConcurrencyMode::Optimistic, true),
        _ => return None,
    };
    Some(VariantSettings {
        mode,
        stores_ignore_fsync,
    })
}

impl Scenario for BackupScenario {
    fn name(&self) -> &'static str {
        "backup"
    }

    fn variants(&self) -> &'static [&'static str] {
        VARIANTS
    }

    fn is_buggy(&self, variant: &str) -> bool {
        matches!(variant, "naive" | "ack-before-fsync")
    }

    fn settings(&self) -> String {
        self.base
            .as_ref()
            .map(|base| base.settings())
            .unwrap_or_default()
    }

    fn replay_flags(&self) -> String {
        self.base
            .as_ref()
            .map(|base| base.replay_flags())
            .unwrap_or_default()
    }

    fn run<'a>(&'a self, run: RunContext) -> RunFuture<'a> {
        let settings = variant_settings(&run.variant).unwrap_or_else(|| {
            panic!(
                "unknown backup variant {:?}; check_variant first",
                run.variant
            )
        });
        Box::pin(cluster::run(
            run,
            settings,
            self.shape,
            self.base.as_deref(),
        ))
    }
}
