//! A long seed sweep in release, printing a line per round so a partial run still says
//! something: `cargo run --release -p crosscheck-sim --example sweep -- optimistic 100000`.
//!
//! The CLI's `crosscheck sim` does the same with a progress bar; this exists so a sweep
//! needs only this crate to build.

use std::time::Instant;

use sim::backup::BackupScenario;
use sim::runner::{BatchSummary, CI_BASE_SEED, Scenario, check_variant, run_batch};

const ROUND_SEEDS: u64 = 10_000;

fn main() {
    let mut arguments = std::env::args().skip(1);
    let variant = arguments.next().unwrap_or_else(|| "optimistic".to_string());
    let seed_count: u64 = match arguments.next().map(|text| text.parse()) {
        None => 100_000,
        Some(Ok(count)) => count,
        Some(Err(error)) => panic!("the seed count must be a whole number: {error}"),
    };
    let scenario = BackupScenario::default();
    check_variant(&scenario, &variant).unwrap_or_else(|message| panic!("{message}"));
    let jobs = std::thread::available_parallelism()
        .map(usize::from)
        .unwrap_or(2);
    let started = Instant::now();
    let (mut seeds_run, mut seeds_failed) = (0, 0);
    while seeds_run < seed_count {
        let count = ROUND_SEEDS.min(seed_count - seeds_run);
        let first = CI_BASE_SEED + seeds_run;
        let outcomes = run_batch(&scenario, &variant, first, count, jobs, &|_| {});
        let summary = BatchSummary::of(&outcomes);
        for failure in outcomes.iter().filter(|outcome| !outcome.passed()).take(3) {
            println!("{}", failure.failure_report(scenario.name()));
        }
        seeds_run += count;
        seeds_failed += summary.seeds_failed;
        println!(
            "{variant}: seeds {first}..{} failed={} (total {seeds_run} run, {seeds_failed} \
             failed, {:.0} s wall) {:?}",
            first + count - 1,
            summary.seeds_failed,
            started.elapsed().as_secs_f64(),
            summary.failures_by_oracle
        );
    }
}
