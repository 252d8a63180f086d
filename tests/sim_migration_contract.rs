//! The store contract, run against the store as the simulator runs it: the migration's
//! `Store` kept on a simulated disk (no faults here: the contract is about semantics; the
//! seeded scenario adds the faults), and after a crash that keeps only what was synced.

use std::sync::Arc;

use migration::contract;
use sim::disk::{DiskFaults, SimDisk};
use sim::migration::store::DiskStore;

#[test]
fn simulated_disk_store_meets_the_store_contract() {
    let mut seed = 0;
    contract::check_all(|| {
        seed += 1;
        DiskStore::new(Arc::new(SimDisk::new(seed, DiskFaults::none())))
    });
}

#[test]
fn simulated_disk_store_keeps_its_entries_across_a_crash() {
    // The second open happens after a crash that drops every unsynced write: what the
    // store acknowledged must already be durable.
    let disk = Arc::new(SimDisk::new(7, DiskFaults::none()));
    let opens = std::cell::Cell::new(0);
    contract::check_reopen(|| {
        opens.set(opens.get() + 1);
        if opens.get() == 2 {
            disk.crash();
        }
        DiskStore::new(disk.clone())
    });
    assert_eq!(
        opens.get(),
        2,
        "the contract must have reopened the store once"
    );
    assert_eq!(disk.crash_count(), 1);
}
