//! One run of the backup scenario: build the cluster, fault it, heal it, judge it.
//!
//! The run reads as its phases: [`run`] builds index shards, chunk stores and clients as
//! madsim nodes, lets the fault injector work while clients back up their versions,
//! heals, gives the clients a bounded time to finish (liveness), then checks the durable
//! state with the oracles. Clients keep what they committed in [`ClientProgress`], which
//! lives outside the node like a local state file, so a killed client resumes at its
//! first uncommitted version.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backup::service::{ClientId, ConcurrencyMode, RepoConfig};
use backup::{BackupOptions, ChunkerConfig, MemoryEntry, MemorySource, NoProgress, Ring};
use backup::{Clock, Pipeline, SnapshotId};
use madsim::net::Endpoint;
use madsim::runtime::Handle;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::directory::DirectoryBase;
use super::oracles::{self, DurableView, Observations};
use super::servers::{ServerState, run_index_node, run_store_node};
use super::service::{SimService, Topology};
use super::workload::{Tree, Workload, WorkloadShape};
use crate::disk::{DiskFaults, SimDisk};
use crate::faults::{FaultInjector, FaultTarget};
use crate::rpc::RetryPolicy;
use crate::runner::{RunContext, Violation};
use crate::trace::{Trace, Word};

const PORT: u16 = 7000;
/// Separates the clients' settings stream from the workload's and the faults'.
const CLIENT_STREAM: u64 = 0x434c_4945_4e54_0001;
/// Virtual time every client gets after the heal to finish its backups.
pub const LIVENESS_BOUND: Duration = Duration::from_secs(30);
/// Pessimistic leases: long against an RPC attempt, short against the run.
pub const LEASE_MS: u64 = 2_000;
/// Wait before a client retries a version whose backup failed.
const VERSION_RETRY_WAIT: Duration = Duration::from_millis(50);

/// The shape of the standard cluster (the benchmark's: 3 clients, 2 shards, 2 stores).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct ClusterShape {
    pub index_shard_count: usize,
    pub store_count: usize,
    pub workload: WorkloadShape,
}

impl Default for ClusterShape {
    fn default() -> Self {
        Self {
            index_shard_count: 2,
            store_count: 2,
            workload: WorkloadShape::default(),
        }
    }
}

/// What a variant changes: the index's mode, and whether the stores skip fsync.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VariantSettings {
    pub mode: ConcurrencyMode,
    pub stores_ignore_fsync: bool,
}

/// What a client has committed so far; survives the client's restarts.
#[derive(Debug, Default)]
pub struct ClientProgress {
    pub next_version: usize,
    pub committed: Vec<(usize, SnapshotId)>,
    pub finished: bool,
}

struct VirtualClock;

impl Clock for VirtualClock {
    fn now_ms(&self) -> u64 {
        madsim::time::TimeHandle::current().elapsed().as_millis() as u64
    }

    async fn sleep_ms(&self, duration_ms: u64) {
        madsim::time::sleep(Duration::from_millis(duration_ms)).await;
    }
}

fn address(group: u8, index: usize) -> SocketAddr {
    let ip = IpAddr::V4(Ipv4Addr::new(10, group, 0, index as u8 + 1));
    SocketAddr::new(ip, PORT)
}

/// Everything a client node needs, cheap to clone for each restart.
#[derive(Clone)]
struct ClientSetup {
    index: usize,
    name: String,
    address: SocketAddr,
    versions: Arc<Vec<Tree>>,
    progress: Arc<Mutex<ClientProgress>>,
    topology: Topology,
    repo: RepoConfig,
    policy: RetryPolicy,
    trace: Trace,
    observations: Arc<Mutex<Observations>>,
    check_commits: Arc<CommitChecker>,
    /// Drawn per client from the seed: without its Bloom filter a client asks the index
    /// about every chunk, which is where the index's concurrency modes differ.
    use_bloom: bool,
}

/// Checks `CommittedRestorable` at the instant a commit is acknowledged.
struct CommitChecker {
    store_disks: Vec<SimDisk>,
    shard_disks: Vec<SimDisk>,
    mode: ConcurrencyMode,
}

fn source_of(tree: &Tree) -> MemorySource {
    let mut source = MemorySource::new();
    let mut directories = std::collections::BTreeSet::new();
    for path in tree.keys() {
        let mut parent = backup::disk::parent_dir(path);
        while !parent.is_empty() && directories.insert(parent.to_string()) {
            parent = backup::disk::parent_dir(parent);
        }
    }
    for directory in directories {
        source.insert(&directory, 0o755, MemoryEntry::Directory);
    }
    for (path, contents) in tree {
        source.insert(path, 0o644, MemoryEntry::File(contents.clone()));
    }
    source
}

/// The body of a client node: back up each remaining version, retrying failures.
async fn run_client_node(setup: ClientSetup) {
    let endpoint = Endpoint::bind(setup.address)
        .await
        .expect("a client binds its address");
    let client_id = setup.index as ClientId + 1;
    let service = SimService {
        client: client_id,
        endpoint,
        topology: setup.topology.clone(),
        repo: setup.repo.clone(),
        policy: setup.policy,
        observations: setup.observations.clone(),
        leases_granted_at_ms: Default::default(),
    };
    loop {
        let version = setup.progress.lock().expect("progress lock").next_version;
        if version >= setup.versions.len() {
            break;
        }
        let options = BackupOptions {
            label: format!("client{}-v{version}", setup.index),
            time_unix_ms: VirtualClock.now_ms(),
            client: client_id,
            pipeline: Pipeline::Inline,
            batch_size_bytes: 2 * 1024,
            use_bloom: setup.use_bloom,
        };
        let source = Arc::new(source_of(&setup.versions[version]));
        let result = backup::client::backup(&service, source, &options, &VirtualClock, &NoProgress);
        match result.await {
            Ok(report) => {
                check_commit(&setup, &service, &report.snapshot).await;
                let mut progress = setup.progress.lock().expect("progress lock");
                progress.committed.push((version, report.snapshot.clone()));
                progress.next_version += 1;
                let detail = format!("v{version} snapshot={}", &report.snapshot.0[..12]);
                setup.trace.record(&setup.name, Word::Done, detail);
            }
            Err(error) => {
                setup
                    .trace
                    .record(&setup.name, Word::GiveUp, format!("v{version}: {error}"));
                madsim::time::sleep(VERSION_RETRY_WAIT).await;
            }
        }
    }
    setup.progress.lock().expect("progress lock").finished = true;
    std::future::pending::<()>().await;
}

async fn check_commit(setup: &ClientSetup, service: &SimService, id: &SnapshotId) {
    let checker = &setup.check_commits;
    let view = match DurableView::open(&checker.store_disks, &checker.shard_disks, checker.mode) {
        Ok(view) => view,
        Err(violation) => {
            setup
                .observations
                .lock()
                .expect("observations lock")
                .violations
                .push(violation);
            return;
        }
    };
    let Ok(manifest) = view.manifests.get(id) else {
        // Not durable (or damaged by the fault model): `RestoresIdentical` judges it.
        return;
    };
    let found = oracles::check_commit_durable(&manifest, service.client, &view, &setup.topology);
    if let Some(violation) = found {
        setup.trace.record(
            &setup.name,
            Word::Check,
            format!("oracle={}", violation.oracle),
        );
        setup
            .observations
            .lock()
            .expect("observations lock")
            .violations
            .push(violation);
    }
}

/// Runs one seed of the backup scenario. See the module doc for the phases.
pub async fn run(
    context: RunContext,
    settings: VariantSettings,
    shape: ClusterShape,
    base: Option<&DirectoryBase>,
) -> Vec<Violation> {
    let RunContext {
        seed,
        config,
        trace,
        ..
    } = context;
    let handle = Handle::current();
    let workload = Workload::generate_from(seed, shape.workload, base);
    let observations = Arc::new(Mutex::new(Observations::default()));
    let repo = RepoConfig {
        chunker: ChunkerConfig::with_average(256),
        shard_count: shape.index_shard_count,
        mode: settings.mode,
        ..RepoConfig::default()
    };
    let (shards, stores) = make_servers(seed, shape, settings, &config.disk);
    let topology = Topology {
        index_shards: shards.iter().map(|s| s.address).collect(),
        stores: stores.iter().map(|s| s.address).collect(),
        ring: Ring::new(shape.index_shard_count, repo.vnodes_per_shard),
    };
    let mut targets = start_servers(
        &handle,
        &shards,
        &stores,
        settings.mode,
        &trace,
        &observations,
    );
    let policy = RetryPolicy {
        attempt_timeout: Duration::from_millis(config.rpc_timeout_ms),
        attempts_max: 4,
        backoff: Duration::from_millis(10),
        duplicate_rate: config.duplicate_rate,
    };
    let check_commits = Arc::new(CommitChecker {
        store_disks: stores.iter().map(|s| s.disk.clone()).collect(),
        shard_disks: shards.iter().map(|s| s.disk.clone()).collect(),
        mode: settings.mode,
    });
    let template = ClientSetup {
        index: 0,
        name: String::new(),
        address: address(3, 0),
        versions: Arc::new(Vec::new()),
        progress: Arc::default(),
        topology: topology.clone(),
        repo,
        policy,
        trace: trace.clone(),
        observations: observations.clone(),
        check_commits: check_commits.clone(),
        use_bloom: true,
    };
    let progress = start_clients(&handle, seed, &workload, &template, &mut targets);
    let mut injector = FaultInjector::new(seed, config.clone(), targets, trace.clone());
    injector.run_fault_phase().await;
    injector.heal();
    let mut violations = await_clients(&progress, &trace).await;
    violations.extend(final_checks(
        &check_commits,
        &topology,
        &workload,
        &progress,
        &observations,
    ));
    let during_run =
        std::mem::take(&mut observations.lock().expect("observations lock").violations);
    violations.extend(during_run);
    violations
}

/// Index shards and stores with their disks, each disk with its own seeded stream.
fn make_servers(
    seed: u64,
    shape: ClusterShape,
    settings: VariantSettings,
    faults: &DiskFaults,
) -> (Vec<ServerState>, Vec<ServerState>) {
    // Every disk gets the seed's bit flips: index segments are checksummed, so a flip
    // there drops the segment's claims (the client uploads again), never plants one.
    let disk_faults = |is_store: bool| DiskFaults {
        fsync_ignored: is_store && settings.stores_ignore_fsync,
        ..*faults
    };
    let shards = (0..shape.index_shard_count)
        .map(|i| {
            let disk = SimDisk::new(seed ^ (0x1000 + i as u64), disk_faults(false));
            ServerState::new(format!("index{i}"), address(1, i), disk)
        })
        .collect();
    let stores = (0..shape.store_count)
        .map(|i| {
            let disk = SimDisk::new(seed ^ (0x2000 + i as u64), disk_faults(true));
            ServerState::new(format!("store{i}"), address(2, i), disk)
        })
        .collect();
    (shards, stores)
}

/// One client node per workload entry, built from `template`; each client's Bloom
/// setting is drawn from the seed and logged. Returns the clients' progress records.
fn start_clients(
    handle: &Handle,
    seed: u64,
    workload: &Workload,
    template: &ClientSetup,
    targets: &mut Vec<FaultTarget>,
) -> Vec<Arc<Mutex<ClientProgress>>> {
    let mut client_rng = ChaCha8Rng::seed_from_u64(seed ^ CLIENT_STREAM);
    let mut progress = Vec::new();
    for (index, versions) in workload.versions.iter().enumerate() {
        let setup = ClientSetup {
            index,
            name: format!("client{index}"),
            address: address(3, index),
            versions: Arc::new(versions.clone()),
            progress: Arc::default(),
            use_bloom: client_rng.random_bool(0.5),
            ..template.clone()
        };
        let detail = format!("address={} bloom={}", setup.address, setup.use_bloom);
        setup.trace.record(&setup.name, Word::Start, detail);
        progress.push(setup.progress.clone());
        targets.push(start_client(handle, setup));
    }
    progress
}

fn start_servers(
    handle: &Handle,
    shards: &[ServerState],
    stores: &[ServerState],
    mode: ConcurrencyMode,
    trace: &Trace,
    observations: &Arc<Mutex<Observations>>,
) -> Vec<FaultTarget> {
    let mut targets = Vec::new();
    for (shard, server) in shards.iter().enumerate() {
        let (server_for_init, trace, observations) =
            (server.clone(), trace.clone(), observations.clone());
        let node = handle
            .create_node()
            .name(&server.name)
            .ip(server.address.ip())
            .init(move || {
                let (server, trace, observations) =
                    (server_for_init.clone(), trace.clone(), observations.clone());
                run_index_node(server, shard, mode, trace, observations)
            })
            .build();
        targets.push(FaultTarget {
            id: node.id(),
            name: server.name.clone(),
            disk: Some(server.disk.clone()),
            killable: true,
        });
    }
    for (index, server) in stores.iter().enumerate() {
        let (server_for_init, trace) = (server.clone(), trace.clone());
        let node = handle
            .create_node()
            .name(&server.name)
            .ip(server.address.ip())
            .init(move || run_store_node(server_for_init.clone(), index == 0, trace.clone()))
            .build();
        targets.push(FaultTarget {
            id: node.id(),
            name: server.name.clone(),
            disk: Some(server.disk.clone()),
            killable: true,
        });
    }
    targets
}

fn start_client(handle: &Handle, setup: ClientSetup) -> FaultTarget {
    let name = setup.name.clone();
    let node = handle
        .create_node()
        .name(&name)
        .ip(setup.address.ip())
        .init(move || run_client_node(setup.clone()))
        .build();
    FaultTarget {
        id: node.id(),
        name,
        disk: None,
        killable: true,
    }
}

/// Liveness: every client finishes within [`LIVENESS_BOUND`] of the heal.
async fn await_clients(progress: &[Arc<Mutex<ClientProgress>>], trace: &Trace) -> Vec<Violation> {
    let deadline = madsim::time::Instant::now() + LIVENESS_BOUND;
    loop {
        let unfinished: Vec<usize> = (0..progress.len())
            .filter(|&i| !progress[i].lock().expect("progress lock").finished)
            .collect();
        if unfinished.is_empty() {
            trace.record("harness", Word::Check, "liveness: every client finished");
            return Vec::new();
        }
        if madsim::time::Instant::now() >= deadline {
            let detail = format!(
                "clients {unfinished:?} did not finish within {} s of the heal",
                LIVENESS_BOUND.as_secs()
            );
            return vec![Violation::liveness("EveryClientCommits", detail)];
        }
        madsim::time::sleep(Duration::from_millis(50)).await;
    }
}

fn final_checks(
    checker: &CommitChecker,
    topology: &Topology,
    workload: &Workload,
    progress: &[Arc<Mutex<ClientProgress>>],
    observations: &Arc<Mutex<Observations>>,
) -> Vec<Violation> {
    let view = match DurableView::open(&checker.store_disks, &checker.shard_disks, checker.mode) {
        Ok(view) => view,
        Err(violation) => return vec![violation],
    };
    let acknowledged: Vec<(usize, usize, SnapshotId)> = progress
        .iter()
        .enumerate()
        .flat_map(|(client, progress)| {
            let progress = progress.lock().expect("progress lock");
            let committed = progress.committed.clone();
            committed
                .into_iter()
                .map(move |(version, id)| (client, version, id))
        })
        .collect();
    let manifests_corrupted = !checker.store_disks[0].corrupted_paths().is_empty();
    let mut violations = oracles::check_restores(
        &view,
        topology,
        workload,
        &acknowledged,
        manifests_corrupted,
    );
    violations.extend(oracles::check_index_claims(&view, topology));
    violations.extend(oracles::check_index_damage(&view, &checker.shard_disks));
    violations.extend(oracles::check_leases(
        &observations.lock().expect("observations lock"),
    ));
    violations
}
