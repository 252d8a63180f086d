//! Scripted schedules: a fixed sequence of migration steps driven against the real store
//! nodes, instead of a seed's random interleaving.
//!
//! A model checker's counterexample is a list of actions (`WriteX`, `DeliverY`,
//! `Backfill`, ...). [`run_schedule`] performs exactly those, in that order, over RPC to
//! store nodes X and Y running MIGRATION's code on simulated disks, then finishes the
//! migration the way the variant's coordinator would and judges Y with the scenario's
//! oracles. A dual write's second half and a backfill copy are held by the driver until
//! the schedule says `DeliverY`, so the script controls every delivery order.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use madsim::net::Endpoint;
use madsim::runtime::Handle;
use migration::Variant;
use migration::compare::{self, MismatchKind};
use migration::store::Entry;

use super::cluster::{address, preload_x};
use super::messages::{Source, StoreAnswer, StoreCall, WireDelivery, WireOp};
use super::nodes::{Shared, call_until_answered, run_store_node, tag_of};
use super::oracles::{self, Observations};
use super::store::DiskStore;
use crate::disk::{DiskFaults, SimDisk};
use crate::rpc::RetryPolicy;
use crate::runner::Violation;
use crate::trace::{Event, Trace};

/// One scripted step; writers are numbered from 1 and keys are names, as in the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// `WriteX` (a put of `value`) or `DeleteX` (`value` = `None`) by `writer`.
    WriteX {
        writer: u8,
        key: String,
        value: Option<u8>,
    },
    /// `DeliverY` of `writer`'s held second half.
    DeliverWrite {
        writer: u8,
    },
    /// `DeliverY` of the held backfill copy of `key`.
    DeliverBackfill {
        key: String,
    },
    CrashWriter {
        writer: u8,
    },
    /// `Backfill`: read `key` from X and hold the copy.
    Backfill {
        key: String,
    },
    /// One verify pass (fixed repairs; naive only compares).
    Verify,
}

/// What a schedule did: the oracles' findings and the trace.
#[derive(Debug)]
pub struct ScheduleOutcome {
    pub violations: Vec<Violation>,
    pub events: Vec<Event>,
}

fn tag(writer: u8, value: Option<u8>) -> String {
    match value {
        Some(value) => format!("w{writer}.val{value}"),
        None => format!("w{writer}.delete"),
    }
}

/// Runs `steps` on fresh nodes in a fresh runtime (`keys` preloaded in X), then finishes
/// the migration with up to three verify passes, and returns what the oracles found.
pub fn run_schedule(variant: Variant, keys: &[String], steps: &[Step]) -> ScheduleOutcome {
    let trace = Trace::new();
    let (keys, steps, trace_for_run) = (keys.to_vec(), steps.to_vec(), trace.clone());
    let violations = std::thread::scope(|scope| {
        let run = move || {
            let runtime =
                madsim::runtime::Runtime::with_seed_and_config(1, madsim::Config::default());
            runtime.block_on(drive(variant, keys, steps, trace_for_run))
        };
        scope.spawn(run).join().expect("a schedule runs to its end")
    });
    ScheduleOutcome {
        violations,
        events: trace.events(),
    }
}

async fn drive(
    variant: Variant,
    keys: Vec<String>,
    steps: Vec<Step>,
    trace: Trace,
) -> Vec<Violation> {
    let shared = Shared {
        trace,
        observations: Arc::new(Mutex::new(Observations::default())),
    };
    let disks: Vec<SimDisk> = (0..2)
        .map(|index| SimDisk::new(index, DiskFaults::none()))
        .collect();
    preload_x(&disks[0], &keys, &shared.observations);
    let (x, y) = (address(1, 0), address(1, 1));
    let handle = Handle::current();
    for (name, at, disk) in [("x", x, disks[0].clone()), ("y", y, disks[1].clone())] {
        let shared = shared.clone();
        handle
            .create_node()
            .name(name)
            .ip(at.ip())
            .init(move || run_store_node(name.to_string(), at, disk.clone(), shared.clone()))
            .build();
    }
    let driver = handle
        .create_node()
        .name("driver")
        .ip(address(3, 0).ip())
        .build();
    let shared_for_driver = shared.clone();
    let done = driver.spawn(async move {
        let endpoint = Endpoint::bind(address(3, 0))
            .await
            .expect("the driver binds");
        let mut driver = Driver {
            variant,
            endpoint,
            shared: shared_for_driver,
            writes: BTreeMap::new(),
            copies: BTreeMap::new(),
        };
        for step in &steps {
            driver.step(step).await;
        }
        for _ in 0..3 {
            if driver.verify().await == 0 {
                break;
            }
        }
    });
    done.await.expect("the driver finishes");
    let observations = shared.observations.lock().expect("observations lock");
    let y_now = DiskStore::new(Arc::new(disks[1].clone()));
    let mut violations = oracles::check_final_y(&observations, &y_now);
    violations.extend(oracles::check_reads(&observations));
    violations
}

struct Driver {
    variant: Variant,
    endpoint: Endpoint,
    shared: Shared,
    /// Each writer's second half, held until `DeliverWrite`.
    writes: BTreeMap<u8, (String, WireDelivery)>,
    /// Backfill copies, held until `DeliverBackfill`.
    copies: BTreeMap<String, Entry>,
}

const POLICY: RetryPolicy = RetryPolicy {
    attempt_timeout: Duration::from_millis(100),
    attempts_max: 3,
    backoff: Duration::from_millis(10),
    duplicate_rate: 0.0,
};

impl Driver {
    async fn call(&self, to: std::net::SocketAddr, call: StoreCall) -> StoreAnswer {
        call_until_answered(&self.endpoint, to, call, &POLICY)
            .await
            .unwrap_or_else(|refusal| panic!("a store refused a scripted step: {refusal}"))
    }

    async fn step(&mut self, step: &Step) {
        let (x, y) = (address(1, 0), address(1, 1));
        match step {
            Step::WriteX { writer, key, value } => {
                let tag = tag(*writer, *value);
                let op = match value {
                    Some(_) => WireOp::Put(tag.clone().into_bytes()),
                    None => WireOp::Delete,
                };
                let request = u64::from(*writer);
                let call = StoreCall::WriteX {
                    request,
                    variant: self.variant,
                    key: key.clone(),
                    op,
                    tag,
                };
                if let StoreAnswer::Delivery(Some(delivery)) = self.call(x, call).await {
                    self.writes.insert(*writer, (key.clone(), delivery));
                }
            }
            Step::DeliverWrite { writer } => {
                // A delete that found nothing left nothing to deliver.
                let Some((key, delivery)) = self.writes.remove(writer) else {
                    return;
                };
                let source = Source::Writer(usize::from(*writer));
                self.call(
                    y,
                    StoreCall::DeliverY {
                        key,
                        delivery,
                        source,
                    },
                )
                .await;
            }
            Step::CrashWriter { writer } => {
                let Some((key, delivery)) = self.writes.remove(writer) else {
                    return;
                };
                let entry = match delivery {
                    WireDelivery::IfNewer(entry) | WireDelivery::Overwrite(entry) => Some(entry),
                    WireDelivery::Remove => None,
                };
                let tag = tag_of(entry.as_ref()).unwrap_or_else(|| format!("w{writer}.delete"));
                self.shared.observe(|o| o.crashed.push((key, tag)));
            }
            Step::Backfill { key } => {
                let call = StoreCall::GetEntries {
                    keys: vec![key.clone()],
                };
                if let StoreAnswer::Entries(entries) = self.call(x, call).await {
                    // The naive scan never sees a key X no longer has.
                    if let Some(Some(entry)) = entries.into_iter().next() {
                        self.copies.insert(key.clone(), entry);
                    }
                }
            }
            Step::DeliverBackfill { key } => {
                let Some(entry) = self.copies.remove(key) else {
                    return;
                };
                let batch = vec![(key.clone(), entry)];
                self.call(
                    y,
                    StoreCall::BackfillApply {
                        variant: self.variant,
                        batch,
                    },
                )
                .await;
            }
            Step::Verify => {
                self.verify().await;
            }
        }
    }

    /// One verify pass over every key; returns the mismatches found.
    async fn verify(&mut self) -> u64 {
        let (x, y) = (address(1, 0), address(1, 1));
        let StoreAnswer::Batch(x_entries) = self
            .call(
                x,
                StoreCall::Scan {
                    after: None,
                    limit: 64,
                },
            )
            .await
        else {
            panic!("X answered Scan with something else");
        };
        let keys: Vec<String> = x_entries.iter().map(|(key, _)| key.clone()).collect();
        let StoreAnswer::Entries(y_entries) = self.call(y, StoreCall::GetEntries { keys }).await
        else {
            panic!("Y answered GetEntries with something else");
        };
        let mut mismatches = 0;
        for ((key, x_entry), y_entry) in x_entries.into_iter().zip(y_entries) {
            let differs = match self.variant {
                Variant::Fixed => compare::classify_fixed(&x_entry, y_entry.as_ref()),
                Variant::Naive => (x_entry.live_value()
                    != y_entry.as_ref().and_then(Entry::live_value))
                .then_some(MismatchKind::ValueDiffers),
            };
            if differs.is_none() {
                continue;
            }
            mismatches += 1;
            if self.variant == Variant::Fixed {
                self.call(
                    y,
                    StoreCall::Repair {
                        key,
                        entry: x_entry,
                    },
                )
                .await;
            }
        }
        mismatches
    }
}
