//! The fault phase and the heal: kills with disk crashes, pauses, partitions, latency.
//!
//! Generic over scenarios: a scenario hands over its nodes as [`FaultTarget`]s (servers
//! with their [`SimDisk`], clients without) and the injector does the rest. Every fault it
//! starts it also schedules to undo, so at [`FaultInjector::heal`] the cluster returns to
//! a calm network with every node up — the precondition of the liveness phase. The order
//! of actions comes from the injector's own ChaCha stream, so a seed replays exactly.

use std::time::Duration;

use madsim::net::NetSim;
use madsim::runtime::Handle;
use madsim::task::NodeId;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::config::SimConfig;
use crate::disk::{DiskFaults, SimDisk};
use crate::trace::{Trace, Word};

const FAULT_STREAM: u64 = 0x4641_554c_5453_0001;

/// One node the injector may strike.
#[derive(Debug, Clone)]
pub struct FaultTarget {
    pub id: NodeId,
    pub name: String,
    /// The node's disk, crashed whenever the node is killed. `None` for diskless nodes.
    pub disk: Option<SimDisk>,
    /// Whether the node may be killed and restarted (its `init` must cope).
    pub killable: bool,
}

/// A fault in force, and what ends it.
#[derive(Debug, Clone, PartialEq)]
enum Undo {
    Restart(usize),
    Resume(usize),
    Unclog { from: usize, to: usize },
    CalmLatency,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Action {
    Kill,
    Pause,
    PartitionBothWays,
    PartitionOneWay,
    LatencySpike,
}

/// Drives the fault phase of one run. See the module doc.
pub struct FaultInjector {
    handle: Handle,
    targets: Vec<FaultTarget>,
    config: SimConfig,
    trace: Trace,
    rng: ChaCha8Rng,
    /// Faults in force with the virtual time (since the phase began) they end.
    pending_undos: Vec<(Duration, Undo)>,
    calm_network: madsim::net::Config,
    down_or_paused: Vec<bool>,
}

impl FaultInjector {
    pub fn new(seed: u64, config: SimConfig, targets: Vec<FaultTarget>, trace: Trace) -> Self {
        let handle = Handle::current();
        let mut calm_network = madsim::net::Config::default();
        NetSim::current().update_config(|network| calm_network = network.clone());
        let down_or_paused = vec![false; targets.len()];
        let rng = ChaCha8Rng::seed_from_u64(seed ^ FAULT_STREAM);
        Self {
            handle,
            targets,
            config,
            trace,
            rng,
            pending_undos: Vec::new(),
            calm_network,
            down_or_paused,
        }
    }

    fn enabled_actions(&self) -> Vec<Action> {
        let config = &self.config;
        let flags = [
            (config.kill_restart, Action::Kill),
            (config.pause, Action::Pause),
            (config.partition_both_ways, Action::PartitionBothWays),
            (config.partition_one_way, Action::PartitionOneWay),
            (config.latency_spike_ms_max > 0, Action::LatencySpike),
        ];
        flags
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, action)| *action)
            .collect()
    }

    /// Runs faults for `config.fault_phase_ms` of virtual time, then returns with some
    /// faults possibly still in force (call [`FaultInjector::heal`]).
    pub async fn run_fault_phase(&mut self) {
        let phase = Duration::from_millis(self.config.fault_phase_ms);
        let loss = self.config.packet_loss_rate;
        if loss > 0.0 {
            NetSim::current().update_config(|network| network.packet_loss_rate = loss);
            self.trace.record(
                "faults",
                Word::Partition,
                format!("packet_loss_rate={loss:.3}"),
            );
        }
        let actions = self.enabled_actions();
        let start = madsim::time::Instant::now();
        loop {
            let mean_ms = self.config.fault_interval_ms_mean;
            let wait = Duration::from_millis(self.rng.random_range(1..=2 * mean_ms));
            madsim::time::sleep(wait).await;
            let now = start.elapsed();
            if now >= phase {
                return;
            }
            self.undo_due(now);
            if !actions.is_empty() {
                let action = actions[self.rng.random_range(0..actions.len())];
                self.strike(action, now);
            }
        }
    }

    fn undo_due(&mut self, now: Duration) {
        let (due, later): (Vec<_>, Vec<_>) =
            self.pending_undos.drain(..).partition(|(at, _)| *at <= now);
        self.pending_undos = later;
        for (_, undo) in due {
            self.undo(undo);
        }
    }

    fn hold_ms(&mut self) -> Duration {
        Duration::from_millis(self.rng.random_range(20..800))
    }

    fn pick_up_target(&mut self, killable_only: bool) -> Option<usize> {
        let candidates: Vec<usize> = (0..self.targets.len())
            .filter(|&index| !self.down_or_paused[index])
            .filter(|&index| !killable_only || self.targets[index].killable)
            .collect();
        if candidates.is_empty() {
            return None;
        }
        Some(candidates[self.rng.random_range(0..candidates.len())])
    }

    fn strike(&mut self, action: Action, now: Duration) {
        let until = now + self.hold_ms();
        match action {
            Action::Kill => {
                let Some(index) = self.pick_up_target(true) else {
                    return;
                };
                self.kill(index);
                self.pending_undos.push((until, Undo::Restart(index)));
            }
            Action::Pause => {
                let Some(index) = self.pick_up_target(false) else {
                    return;
                };
                self.handle.pause(self.targets[index].id);
                self.down_or_paused[index] = true;
                self.trace
                    .record(&self.targets[index].name, Word::Pause, "");
                self.pending_undos.push((until, Undo::Resume(index)));
            }
            Action::PartitionBothWays | Action::PartitionOneWay => {
                if self.targets.len() < 2 {
                    return;
                }
                let from = self.rng.random_range(0..self.targets.len());
                let to = (from + self.rng.random_range(1..self.targets.len())) % self.targets.len();
                let both = action == Action::PartitionBothWays;
                self.clog(from, to);
                self.pending_undos.push((until, Undo::Unclog { from, to }));
                if both {
                    self.clog(to, from);
                    self.pending_undos
                        .push((until, Undo::Unclog { from: to, to: from }));
                }
            }
            Action::LatencySpike => {
                let spike_ms = self.rng.random_range(10..=self.config.latency_spike_ms_max);
                let range = Duration::from_millis(1)..Duration::from_millis(spike_ms);
                NetSim::current().update_config(|network| network.send_latency = range);
                self.trace.record(
                    "faults",
                    Word::Partition,
                    format!("latency_ms_max={spike_ms}"),
                );
                self.pending_undos.push((until, Undo::CalmLatency));
            }
        }
    }

    fn kill(&mut self, index: usize) {
        let target = &self.targets[index];
        self.handle.kill(target.id);
        let detail = match &target.disk {
            Some(disk) => {
                let report = disk.crash();
                let corrupted = match &report.corrupted {
                    Some((path, bit)) => format!(" bitflip={path}@{bit}"),
                    None => String::new(),
                };
                format!(
                    "ops_kept={} ops_lost={} writes_kept={} writes_lost={} writes_torn={}{}",
                    report.pending_ops_kept,
                    report.pending_ops_lost,
                    report.writes_kept,
                    report.writes_lost,
                    report.writes_torn,
                    corrupted
                )
            }
            None => "diskless".to_string(),
        };
        self.trace.record(&target.name, Word::Crash, detail);
        self.down_or_paused[index] = true;
    }

    fn clog(&mut self, from: usize, to: usize) {
        NetSim::current().clog_link(self.targets[from].id, self.targets[to].id);
        let detail = format!("cut {}->{}", self.targets[from].name, self.targets[to].name);
        self.trace.record("faults", Word::Partition, detail);
    }

    fn undo(&mut self, undo: Undo) {
        match undo {
            Undo::Restart(index) => {
                self.handle.restart(self.targets[index].id);
                self.down_or_paused[index] = false;
                self.trace
                    .record(&self.targets[index].name, Word::Restart, "");
            }
            Undo::Resume(index) => {
                self.handle.resume(self.targets[index].id);
                self.down_or_paused[index] = false;
                self.trace
                    .record(&self.targets[index].name, Word::Resume, "");
            }
            Undo::Unclog { from, to } => {
                NetSim::current().unclog_link(self.targets[from].id, self.targets[to].id);
            }
            Undo::CalmLatency => {
                let calm = self.calm_network.send_latency.clone();
                NetSim::current().update_config(|network| network.send_latency = calm);
            }
        }
    }

    /// Ends every fault: nodes up, links whole, no loss, calm latency, and disks that no
    /// longer inject errors or corruption (a planted `fsync_ignored` bug stays).
    pub fn heal(&mut self) {
        for (_, undo) in std::mem::take(&mut self.pending_undos) {
            self.undo(undo);
        }
        let calm = self.calm_network.clone();
        NetSim::current().update_config(|network| *network = calm);
        for target in &self.targets {
            if let Some(disk) = &target.disk {
                let faults = disk.faults();
                disk.set_faults(DiskFaults {
                    io_error_rate: 0.0,
                    fsync_error_rate: 0.0,
                    corruption_rate: 0.0,
                    ..faults
                });
            }
        }
        assert!(
            self.down_or_paused.iter().all(|down| !down),
            "heal left a node down"
        );
        self.trace
            .record("faults", Word::Heal, "every node up, every link whole");
    }
}
