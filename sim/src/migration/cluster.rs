//! One run of the migration scenario: build the nodes, fault them, heal, judge.
//!
//! The run reads as its phases: X is loaded with every key; stores X and Y, the
//! coordinator and the writers start as madsim nodes; the fault injector works for the
//! seed's fault phase while the writers write and delete overlapping keys through every
//! migration phase; everything heals; writers and coordinator get [`LIVENESS_BOUND`] to
//! finish; then the oracles judge Y and the clients' reads.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use madsim::runtime::Handle;
use migration::Variant;
use migration::store::Store;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::coordinator_node::{CoordinatorSetup, run_coordinator};
use super::messages::WireOp;
use super::nodes::{PhaseBoard, PlannedOp, Shared, WriterSetup, run_store_node, run_writer};
use super::oracles::{self, Observations};
use super::store::DiskStore;
use crate::config::SimConfig;
use crate::disk::{DiskFaults, SimDisk};
use crate::faults::{FaultInjector, FaultTarget};
use crate::history::AuthorityWrite;
use crate::rpc::RetryPolicy;
use crate::runner::{RunContext, Violation};
use crate::trace::Word;

const PORT: u16 = 7100;
/// Separates the workload's random stream from the fault mix and the runtime.
const WORKLOAD_STREAM: u64 = 0x4d49_4752_4154_0001;
/// Virtual time writers and coordinator get after the heal to finish.
pub const LIVENESS_BOUND: Duration = Duration::from_secs(10);

/// The workload and pacing of one run, drawn from its seed and logged at its start.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Knobs {
    pub writer_count: usize,
    pub key_count: usize,
    pub ops_per_writer: usize,
    pub delete_rate: f64,
    /// Chance that a writer stops between its X and Y writes (0 on half the seeds).
    pub writer_crash_rate: f64,
    /// The longest a dual write waits between X's acknowledgement and its Y write.
    pub deliver_delay_ms_max: u64,
    pub backfill_delay_ms_max: u64,
    pub think_ms_max: u64,
    pub step_wait_ms: u64,
    pub batch_keys: usize,
}

impl Knobs {
    pub fn from_seed(seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ WORKLOAD_STREAM);
        let crash_on = rng.random_bool(0.5);
        Self {
            writer_count: 3,
            key_count: rng.random_range(2..=5),
            ops_per_writer: rng.random_range(6..=14),
            delete_rate: rng.random_range(0.1..0.4),
            writer_crash_rate: if crash_on {
                rng.random_range(0.03..0.2)
            } else {
                0.0
            },
            deliver_delay_ms_max: rng.random_range(0..=80),
            backfill_delay_ms_max: rng.random_range(0..=150),
            think_ms_max: rng.random_range(5..=80),
            step_wait_ms: rng.random_range(10..=80),
            batch_keys: rng.random_range(1..=3),
        }
    }

    fn plan(&self, seed: u64) -> Vec<Vec<PlannedOp>> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ WORKLOAD_STREAM ^ 0xff);
        (0..self.writer_count)
            .map(|writer| {
                (0..self.ops_per_writer)
                    .map(|number| {
                        let tag = format!("w{writer}.{number}");
                        let op = if rng.random_bool(self.delete_rate) {
                            WireOp::Delete
                        } else {
                            WireOp::Put(tag.clone().into_bytes())
                        };
                        PlannedOp {
                            key: key_name(rng.random_range(0..self.key_count)),
                            op,
                            tag,
                            think: Duration::from_millis(rng.random_range(0..=self.think_ms_max)),
                            deliver_delay: Duration::from_millis(
                                rng.random_range(0..=self.deliver_delay_ms_max),
                            ),
                            crash: rng.random_bool(self.writer_crash_rate),
                        }
                    })
                    .collect()
            })
            .collect()
    }
}

pub fn key_name(index: usize) -> String {
    format!("k{index}")
}

pub fn address(group: u8, index: usize) -> SocketAddr {
    SocketAddr::new(
        IpAddr::V4(Ipv4Addr::new(10, 9, group, index as u8 + 1)),
        PORT,
    )
}

/// Puts every key into X before the migration, each as the authority's first write.
pub fn preload_x(disk: &SimDisk, keys: &[String], observations: &Mutex<Observations>) {
    let faults = disk.faults();
    disk.set_faults(DiskFaults::none());
    let x = DiskStore::new(Arc::new(disk.clone()));
    let mut observations = observations.lock().expect("observations lock");
    for key in keys {
        let tag = format!("init.{key}");
        x.put(key, tag.as_bytes())
            .expect("a fault-free disk accepts the preload");
        let (key, live) = (key.clone(), true);
        observations
            .authority
            .push(AuthorityWrite { key, tag, live });
    }
    disk.set_faults(faults);
}

/// The disk faults store and coordinator disks get.
fn disk_faults(config: &SimConfig) -> DiskFaults {
    // Not yet: bit flips at rest. Records carry no checksum, so a flip would plant a
    // wrong value that no oracle could tell from a migration bug; checksummed records
    // would let the store refuse it instead.
    DiskFaults {
        corruption_rate: 0.0,
        ..config.disk
    }
}

/// Runs one seed of the migration scenario. See the module doc for the phases.
pub async fn run(context: RunContext, variant: Variant) -> Vec<Violation> {
    let RunContext {
        seed,
        config,
        trace,
        ..
    } = context;
    let knobs = Knobs::from_seed(seed);
    trace.record("harness", Word::Start, format!("{knobs:?}"));
    let handle = Handle::current();
    let shared = Shared {
        trace: trace.clone(),
        observations: Arc::new(Mutex::new(Observations::default())),
    };
    let keys: Vec<String> = (0..knobs.key_count).map(key_name).collect();
    let disks: Vec<SimDisk> = (0..3)
        .map(|index| SimDisk::new(seed ^ (0x3000 + index), disk_faults(&config)))
        .collect();
    preload_x(&disks[0], &keys, &shared.observations);
    let (x, y) = (address(1, 0), address(1, 1));
    let mut targets = Vec::new();
    for (name, at, disk) in [("x", x, &disks[0]), ("y", y, &disks[1])] {
        let (disk_for_init, shared) = (disk.clone(), shared.clone());
        let node = handle
            .create_node()
            .name(name)
            .ip(at.ip())
            .init(move || {
                run_store_node(name.to_string(), at, disk_for_init.clone(), shared.clone())
            })
            .build();
        let disk = Some(disk.clone());
        targets.push(FaultTarget {
            id: node.id(),
            name: name.into(),
            disk,
            killable: true,
        });
    }
    let policy = RetryPolicy {
        attempt_timeout: Duration::from_millis(config.rpc_timeout_ms),
        attempts_max: 4,
        backoff: Duration::from_millis(10),
        duplicate_rate: config.duplicate_rate,
    };
    let board = PhaseBoard::new();
    let coordinator = CoordinatorSetup {
        name: "coord".into(),
        address: address(2, 0),
        disk: disks[2].clone(),
        x,
        y,
        variant,
        batch_keys: knobs.batch_keys,
        step_wait: Duration::from_millis(knobs.step_wait_ms),
        backfill_delay_ms_max: knobs.backfill_delay_ms_max,
        board: board.clone(),
        shared: shared.clone(),
        policy,
        done: Arc::new(AtomicBool::new(false)),
    };
    let done = coordinator.done.clone();
    targets.push(start_coordinator(&handle, coordinator));
    let mut finished = Vec::new();
    for (index, plan) in knobs.plan(seed).into_iter().enumerate() {
        let setup = WriterSetup {
            index,
            name: format!("writer{index}"),
            address: address(3, index),
            x,
            y,
            variant,
            plan: Arc::new(plan),
            board: board.clone(),
            shared: shared.clone(),
            policy,
            finished: Arc::new(AtomicBool::new(false)),
        };
        finished.push(setup.finished.clone());
        targets.push(start_writer(&handle, setup));
    }
    let mut injector = FaultInjector::new(seed, config, targets, trace.clone());
    injector.run_fault_phase().await;
    injector.heal();
    let mut violations = await_completion(&finished, &done).await;
    let observations = shared.observations.lock().expect("observations lock");
    let final_y = DiskStore::new(Arc::new(disks[1].clone()));
    violations.extend(oracles::check_final_y(&observations, &final_y));
    violations.extend(oracles::check_reads(&observations));
    violations.extend(observations.violations.iter().cloned());
    trace.record(
        "harness",
        Word::Check,
        format!(
            "writes_ordered={} y_changes={} client_ops={} writer_crashes={}",
            observations.authority.len(),
            observations.y_sets.len(),
            observations.client_ops.len(),
            observations.crashed.len()
        ),
    );
    violations
}

fn start_coordinator(handle: &Handle, setup: CoordinatorSetup) -> FaultTarget {
    let (name, disk) = (setup.name.clone(), setup.disk.clone());
    let node = handle
        .create_node()
        .name(&name)
        .ip(setup.address.ip())
        .init(move || run_coordinator(setup.clone()))
        .build();
    FaultTarget {
        id: node.id(),
        name,
        disk: Some(disk),
        killable: true,
    }
}

fn start_writer(handle: &Handle, setup: WriterSetup) -> FaultTarget {
    let name = setup.name.clone();
    let node = handle
        .create_node()
        .name(&name)
        .ip(setup.address.ip())
        .init(move || run_writer(setup.clone()))
        .build();
    // Not yet: killing writers at random. A writer holds no state worth a disk, but a
    // kill mid-operation after reads switch would lose an X write with X's retirement,
    // which the oracles cannot tell from a bug; writers stop through `CrashWriter`.
    FaultTarget {
        id: node.id(),
        name,
        disk: None,
        killable: false,
    }
}

/// Liveness: writers finish and the migration reaches `Done` within the bound.
async fn await_completion(finished: &[Arc<AtomicBool>], done: &AtomicBool) -> Vec<Violation> {
    let deadline = madsim::time::Instant::now() + LIVENESS_BOUND;
    loop {
        let writers_left = finished
            .iter()
            .filter(|f| !f.load(Ordering::SeqCst))
            .count();
        let migrated = done.load(Ordering::SeqCst);
        if writers_left == 0 && migrated {
            return Vec::new();
        }
        if madsim::time::Instant::now() >= deadline {
            let detail = format!(
                "{writers_left} writer(s) unfinished, migration done={migrated}, {} s after \
                 the heal",
                LIVENESS_BOUND.as_secs()
            );
            return vec![Violation::liveness("Completes", detail)];
        }
        madsim::time::sleep(Duration::from_millis(50)).await;
    }
}
