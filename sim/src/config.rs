//! The swarm configuration: which faults a seed turns on, and how hard.
//!
//! Swarm testing: rather than every run suffering every fault a little, each seed draws
//! its own mix — some seeds only lose packets, some only crash disks, some get
//! everything — because a bug hidden by one fault (a partition that stops the traffic
//! a crash needed) shows under another mix. [`SimConfig::from_seed`] is the one place the
//! mix is drawn; it uses its own ChaCha stream, so adding a workload draw elsewhere never
//! changes which faults a seed has. The whole config is logged at the start of each run.

use std::fmt;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::disk::DiskFaults;

/// Separates the config's random stream from the workload's and the runtime's.
const CONFIG_STREAM: u64 = 0x5157_4152_4d00_0001;

/// Every randomized setting of one run's fault injection.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimConfig {
    /// Kill server nodes (their disks crash) and restart them later.
    pub kill_restart: bool,
    /// Pause server nodes (their tasks stop, their timers do not) and resume them.
    pub pause: bool,
    /// Cut links between two nodes in both directions.
    pub partition_both_ways: bool,
    /// Cut a link in one direction only: requests arrive, replies do not (or the reverse).
    pub partition_one_way: bool,
    /// Fraction of messages the network drops while faults are on.
    pub packet_loss_rate: f64,
    /// Raise the one-hop latency to up to this many milliseconds at times (0: never).
    pub latency_spike_ms_max: u64,
    /// Fraction of RPC requests the network delivers twice.
    pub duplicate_rate: f64,
    /// How long one RPC attempt waits for its reply before retrying.
    pub rpc_timeout_ms: u64,
    /// The disk fault rates every server disk gets.
    pub disk: DiskFaults,
    /// How long the fault phase lasts before everything heals.
    pub fault_phase_ms: u64,
    /// Mean virtual time between two fault actions.
    pub fault_interval_ms_mean: u64,
}

impl SimConfig {
    /// The mix of faults for `seed`: each fault class is on with probability one half.
    pub fn from_seed(seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ CONFIG_STREAM);
        let mut coin = || rng.random_bool(0.5);
        let (kill_restart, pause, partition_both_ways, partition_one_way) =
            (coin(), coin(), coin(), coin());
        let (packet_loss_on, latency_on, duplicate_on, disk_errors_on, corruption_on) =
            (coin(), coin(), coin(), coin(), coin());
        let disk = DiskFaults {
            pending_keep_rate: rng.random_range(0.0..1.0),
            torn_write_rate: rng.random_range(0.0..1.0),
            corruption_rate: if corruption_on {
                rng.random_range(0.01..0.2)
            } else {
                0.0
            },
            io_error_rate: if disk_errors_on {
                rng.random_range(0.001..0.05)
            } else {
                0.0
            },
            fsync_error_rate: if disk_errors_on {
                rng.random_range(0.001..0.05)
            } else {
                0.0
            },
            fsync_ignored: false,
        };
        Self {
            kill_restart,
            pause,
            partition_both_ways,
            partition_one_way,
            packet_loss_rate: if packet_loss_on {
                rng.random_range(0.01..0.2)
            } else {
                0.0
            },
            latency_spike_ms_max: if latency_on {
                rng.random_range(20..300)
            } else {
                0
            },
            duplicate_rate: if duplicate_on {
                rng.random_range(0.05..0.5)
            } else {
                0.0
            },
            rpc_timeout_ms: rng.random_range(30..200),
            disk,
            fault_phase_ms: rng.random_range(500..3_000),
            fault_interval_ms_mean: rng.random_range(50..400),
        }
    }

    /// A run with no faults at all: the baseline every variant must pass.
    pub fn calm() -> Self {
        Self {
            kill_restart: false,
            pause: false,
            partition_both_ways: false,
            partition_one_way: false,
            packet_loss_rate: 0.0,
            latency_spike_ms_max: 0,
            duplicate_rate: 0.0,
            rpc_timeout_ms: 100,
            disk: DiskFaults::none(),
            fault_phase_ms: 0,
            fault_interval_ms_mean: 100,
        }
    }

    /// True when any node-level fault (kill, pause, partition) can fire.
    pub fn has_node_faults(&self) -> bool {
        self.kill_restart || self.pause || self.partition_both_ways || self.partition_one_way
    }

    /// The short names of the faults that are on, for summaries: `kill,loss,dup`.
    pub fn fault_mix(&self) -> String {
        let disk = &self.disk;
        let flags = [
            (self.kill_restart, "kill"),
            (self.pause, "pause"),
            (self.partition_both_ways, "partition"),
            (self.partition_one_way, "partition1way"),
            (self.packet_loss_rate > 0.0, "loss"),
            (self.latency_spike_ms_max > 0, "latency"),
            (self.duplicate_rate > 0.0, "dup"),
            (disk.io_error_rate > 0.0, "diskerr"),
            (disk.corruption_rate > 0.0, "bitflip"),
        ];
        let on: Vec<&str> = flags
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, name)| *name)
            .collect();
        if on.is_empty() {
            "none".to_string()
        } else {
            on.join(",")
        }
    }
}

impl fmt::Display for SimConfig {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let disk = &self.disk;
        write!(
            formatter,
            "faults={} packet_loss_rate={:.3} latency_spike_ms_max={} duplicate_rate={:.3} \
             rpc_timeout_ms={} fault_phase_ms={} fault_interval_ms_mean={} \
             disk_pending_keep_rate={:.2} disk_torn_write_rate={:.2} disk_corruption_rate={:.3} \
             disk_io_error_rate={:.3} disk_fsync_error_rate={:.3} disk_fsync_ignored={}",
            self.fault_mix(),
            self.packet_loss_rate,
            self.latency_spike_ms_max,
            self.duplicate_rate,
            self.rpc_timeout_ms,
            self.fault_phase_ms,
            self.fault_interval_ms_mean,
            disk.pending_keep_rate,
            disk.torn_write_rate,
            disk.corruption_rate,
            disk.io_error_rate,
            disk.fsync_error_rate,
            disk.fsync_ignored,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_always_draws_the_same_mix_and_seeds_differ() {
        assert_eq!(SimConfig::from_seed(7), SimConfig::from_seed(7));
        let mixes: std::collections::BTreeSet<String> = (0..200)
            .map(|seed| SimConfig::from_seed(seed).fault_mix())
            .collect();
        assert!(
            mixes.len() > 50,
            "swarm testing needs varied mixes, got {}",
            mixes.len()
        );
    }

    #[test]
    fn every_fault_class_is_sometimes_on_and_sometimes_off() {
        let configs: Vec<SimConfig> = (0..200).map(SimConfig::from_seed).collect();
        let classes: [fn(&SimConfig) -> bool; 6] = [
            |c| c.kill_restart,
            |c| c.pause,
            |c| c.partition_one_way,
            |c| c.packet_loss_rate > 0.0,
            |c| c.duplicate_rate > 0.0,
            |c| c.disk.corruption_rate > 0.0,
        ];
        for (index, class) in classes.iter().enumerate() {
            let on = configs.iter().filter(|c| class(c)).count();
            assert!(
                (40..160).contains(&on),
                "fault class {index} on in {on}/200 seeds"
            );
        }
    }
}
