//! The fault injector strikes only with the faults a config turns on, and its heal
//! brings every killed or paused node back, with the disk crashed at each kill.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use madsim::runtime::{Handle, Runtime};
use sim::config::SimConfig;
use sim::disk::{DiskFaults, SimDisk};
use sim::faults::{FaultInjector, FaultTarget};
use sim::trace::{Trace, Word};

/// Runs a fault phase over three nodes that count their own starts; returns the trace,
/// the start count of each node, and the crash count of each node's disk.
fn run_faults(seed: u64, config: SimConfig) -> (Trace, Vec<u64>, Vec<u64>) {
    std::thread::spawn(move || {
        let runtime = Runtime::with_seed_and_config(seed, madsim::Config::default());
        runtime.block_on(async move {
            let handle = Handle::current();
            let trace = Trace::new();
            let mut targets = Vec::new();
            let mut starts = Vec::new();
            for index in 0..3u8 {
                let started = Arc::new(AtomicU64::new(0));
                let counter = started.clone();
                let node = handle
                    .create_node()
                    .name(format!("node{index}"))
                    .ip([10, 9, 0, index + 1].into())
                    .init(move || {
                        counter.fetch_add(1, Ordering::Relaxed);
                        std::future::pending::<()>()
                    })
                    .build();
                let disk = SimDisk::new(u64::from(index), DiskFaults::none());
                let name = format!("node{index}");
                targets.push(FaultTarget {
                    id: node.id(),
                    name,
                    disk: Some(disk),
                    killable: true,
                });
                starts.push(started);
            }
            let disks: Vec<SimDisk> = targets.iter().filter_map(|t| t.disk.clone()).collect();
            let mut injector = FaultInjector::new(seed, config, targets, trace.clone());
            injector.run_fault_phase().await;
            injector.heal();
            madsim::time::sleep(Duration::from_millis(10)).await;
            let starts = starts.iter().map(|s| s.load(Ordering::Relaxed)).collect();
            (
                trace,
                starts,
                disks.iter().map(SimDisk::crash_count).collect(),
            )
        })
    })
    .join()
    .unwrap()
}

fn only_kills() -> SimConfig {
    SimConfig {
        kill_restart: true,
        fault_phase_ms: 2_000,
        ..SimConfig::calm()
    }
}

#[test]
fn every_kill_crashes_the_disk_and_the_heal_restarts_every_node() {
    let (trace, starts, crashes) = run_faults(1, only_kills());
    let kills = trace.count(Word::Crash);
    assert!(
        kills >= 3,
        "two seconds of kills at a 100 ms mean should kill often: {kills}"
    );
    assert_eq!(
        trace.count(Word::Restart),
        kills,
        "every killed node comes back"
    );
    assert_eq!(
        crashes.iter().sum::<u64>() as usize,
        kills,
        "every kill crashed that disk"
    );
    for (node, (&started, &crashed)) in starts.iter().zip(&crashes).enumerate() {
        assert_eq!(
            started,
            crashed + 1,
            "node{node}: one start, plus one per restart"
        );
    }
    assert_eq!(trace.count(Word::Heal), 1);
    assert_eq!(
        trace.count(Word::Pause) + trace.count(Word::Partition),
        0,
        "only kills are on"
    );
}

#[test]
fn a_calm_config_injects_nothing() {
    let calm = SimConfig {
        fault_phase_ms: 1_000,
        ..SimConfig::calm()
    };
    let (trace, starts, crashes) = run_faults(2, calm);
    assert_eq!(trace.len(), 1, "only the heal: {:?}", trace.events());
    assert_eq!(starts, vec![1, 1, 1]);
    assert_eq!(crashes, vec![0, 0, 0]);
}

#[test]
fn pauses_and_partitions_are_all_undone_by_the_heal() {
    let config = SimConfig {
        pause: true,
        partition_both_ways: true,
        partition_one_way: true,
        fault_phase_ms: 2_000,
        ..SimConfig::calm()
    };
    let (trace, _, crashes) = run_faults(3, config);
    assert!(trace.count(Word::Pause) >= 1 && trace.count(Word::Partition) >= 1);
    assert_eq!(trace.count(Word::Pause), trace.count(Word::Resume));
    assert_eq!(crashes, vec![0, 0, 0], "no kills, so no disk crashes");
}
