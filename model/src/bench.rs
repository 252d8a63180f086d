//! `crosscheck bench models`: stateright against TLC on the same model and parameters, in
//! the same run: time to a verdict, distinct states per second, peak memory.
//!
//! The one idea: both tools answer the same question the way each answers it best. A
//! design with a bug gets its verdict at the first violation (TLC stops there; stateright
//! is told to stop there too); a correct design's verdict needs the whole state space from
//! both. stateright runs on every core with no traces recorded; TLC runs with as many
//! workers. Symmetry reduction is not used: stateright applies it only to DFS (its BFS
//! ignores it), and the writers of the migration model are interchangeable only up to the
//! `src` ids of their messages in flight, which a representative function would have to
//! rename consistently. Without it the two tools explore the same state graph, so their
//! distinct-state counts on the full runs must match, and the benchmark checks that.

use serde::Serialize;

use crate::crosscheck::spec_job;
use crate::tlc::{self, TlcError};
use crate::{CheckOptions, Finding, ModelError, Params};

/// One tool's figures on one configuration.
#[derive(Debug, Clone, Serialize)]
pub struct ToolFigures {
    pub verdict: String,
    pub seconds: f64,
    pub states_distinct: u64,
    pub distinct_per_second: f64,
    pub peak_rss_bytes: u64,
    pub peak_rss_bytes_per_million_states: f64,
}

impl ToolFigures {
    fn new(verdict: String, seconds: f64, states_distinct: u64, peak_rss_bytes: u64) -> Self {
        let millions = (states_distinct as f64 / 1e6).max(1e-9);
        ToolFigures {
            verdict,
            seconds,
            states_distinct,
            distinct_per_second: states_distinct as f64 / seconds.max(1e-9),
            peak_rss_bytes,
            peak_rss_bytes_per_million_states: peak_rss_bytes as f64 / millions,
        }
    }
}

/// Both tools on one configuration, with the ratios.
#[derive(Debug, Clone, Serialize)]
pub struct BenchRow {
    pub model: &'static str,
    pub variant: &'static str,
    pub params: Params,
    pub stateright: ToolFigures,
    pub tlc: ToolFigures,
    /// TLC's time to a verdict over stateright's (the target is ≥ 10).
    pub verdict_speedup: f64,
    pub distinct_per_second_ratio: f64,
}

/// The configurations benchmarked, sized on this 2-core machine under load. Measured
/// (2 threads / 2 workers): naive at writers=3 keys=2 values=2, stateright 0.4 s against
/// TLC 2.6-6.5 s (mostly JVM start); fixed at writers=3 keys=2 values=1 (356,232 states),
/// stateright 2.0 s against TLC 105 s. Larger ones: naive at writers=4 keys=3 took TLC
/// 300 s to its first violation (stateright 17 s); fixed at writers=3 keys=2 values=2
/// (1.17 M states) did not finish in TLC within 10 minutes.
pub const CONFIGURATIONS: &[(&str, &str, &[&str])] = &[
    ("migration", "naive", &["writers=3", "keys=2", "values=2"]),
    ("migration", "fixed", &["writers=3", "keys=2", "values=1"]),
];

/// This process's peak resident memory since the last [`reset_peak_rss`].
fn own_peak_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = status
        .lines()
        .find(|line| line.starts_with("VmHWM:"))
        .and_then(|line| line.split_whitespace().nth(1)?.parse::<u64>().ok());
    kib.unwrap_or(0) * 1024
}

/// Resets the kernel's peak-RSS mark for this process (Linux `clear_refs` value 5), so each
/// stateright run's peak is its own.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Tlc(#[from] TlcError),
}

/// Benchmarks one configuration with `threads` stateright threads and TLC workers.
pub fn bench_one(
    model: &str,
    variant: &str,
    params: &[String],
    threads: usize,
) -> Result<BenchRow, BenchError> {
    let entry = crate::find_model(model)?;
    let variant = crate::find_variant(entry, Some(variant))?;
    let params = crate::resolve_params(entry, params)?;
    let options = CheckOptions {
        threads,
        traces: false,
        stop_at_first_violation: true,
    };
    reset_peak_rss();
    let report = entry.check(variant, &params, &options);
    let stateright = ToolFigures::new(
        format!("{:?}", report.finding()),
        report.elapsed_seconds,
        report.states_distinct as u64,
        own_peak_rss_bytes(),
    );
    let run = tlc::run(&spec_job(entry, variant, &params, false, threads))?;
    let tlc = ToolFigures::new(
        format!("{:?}", run.verdict),
        run.elapsed_seconds,
        run.states_distinct,
        run.peak_rss_bytes,
    );
    if report.finding() == Finding::Holds {
        assert_eq!(
            stateright.states_distinct, tlc.states_distinct,
            "full runs of the same model must count the same distinct states"
        );
    }
    Ok(BenchRow {
        model: entry.name(),
        variant: variant.name,
        params,
        verdict_speedup: tlc.seconds / stateright.seconds.max(1e-9),
        distinct_per_second_ratio: stateright.distinct_per_second
            / tlc.distinct_per_second.max(1e-9),
        stateright,
        tlc,
    })
}
