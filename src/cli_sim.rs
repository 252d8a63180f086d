//! `sim`, `replay` and `bench sim`: seeded simulation runs of the real code.
//!
//! Every figure printed here comes from `sim::runner`; this file only chooses seeds,
//! draws the progress bar and turns outcomes into a verdict. Replay output is the run's
//! event trace and nothing that varies between runs (no wall time), so two replays of a
//! seed can be compared with `diff`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use sim::backup::BackupScenario;
use sim::backup::directory::{DirectoryBase, DirectoryLimits};
use sim::runner::{
    BatchSummary, CI_BASE_SEED, Outcome, Scenario, check_determinism, check_variant,
    hunt_first_failure, run_batch, run_seed,
};

use crate::verdict::Verdict;
use crate::verify::Row;

/// Failing seeds whose full report `sim` prints (the rest are counted).
const FAILURE_REPORTS_MAX: usize = 3;
/// A planted bug must show within this many seeds (the bound).
const CATCH_LIMIT_SEEDS: u64 = 1_000;

#[derive(Debug, Args)]
pub struct SimArgs {
    /// The scenario: `backup` or `migration`.
    pub scenario: String,
    /// backup: optimistic (default), pessimistic, naive or ack-before-fsync;
    /// migration: fixed (default) or naive.
    #[arg(long)]
    pub variant: Option<String>,
    /// How many seeds to run.
    #[arg(long, default_value_t = 1000)]
    pub seeds: u64,
    /// The first seed; seeds run from here upward. Default: the CI base seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Worker threads, each running whole seeds. Default: every core.
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// backup only: start every client's files from this real directory (read once,
    /// before the runs) instead of seeded bytes; the seed still draws every edit.
    #[arg(long, value_name = "DIR")]
    pub from_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The scenario: `backup` or `migration`.
    pub scenario: String,
    /// The seed to replay, as printed by a failing run.
    #[arg(long)]
    pub seed: u64,
    /// backup: optimistic (default), pessimistic, naive or ack-before-fsync;
    /// migration: fixed (default) or naive.
    #[arg(long)]
    pub variant: Option<String>,
    /// backup only: the directory the failing run was given with `--from-dir`.
    #[arg(long, value_name = "DIR")]
    pub from_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct BenchSimArgs {
    /// How many seeds to time.
    #[arg(long, default_value_t = 2000)]
    pub seeds: u64,
    /// Print the figures as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// The scenario `name`; for `backup` with `from_dir`, the directory is read here, before
/// any runtime starts, and what was read (or skipped) is said on stderr.
fn scenario_named(name: &str, from_dir: Option<&Path>) -> anyhow::Result<Box<dyn Scenario>> {
    match (name, from_dir) {
        ("backup", None) => Ok(Box::new(BackupScenario::default())),
        ("backup", Some(dir)) => {
            let base = DirectoryBase::read(dir, DirectoryLimits::default())?;
            crate::output::note!("workload: {base}");
            Ok(Box::new(BackupScenario::from_directory(base)))
        }
        ("migration", None) => Ok(Box::new(sim::migration::MigrationScenario)),
        ("migration", Some(_)) => bail!(
            "--from-dir is for the backup scenario: expected `sim backup --from-dir DIR`, \
             found it with `migration`; drop --from-dir"
        ),
        (other, _) => bail!("unknown scenario {other:?}: expected `backup` or `migration`"),
    }
}

fn variant_or_default(scenario: &dyn Scenario, variant: Option<String>) -> anyhow::Result<String> {
    let variant = variant.unwrap_or_else(|| scenario.variants()[0].to_string());
    check_variant(scenario, &variant).map_err(anyhow::Error::msg)?;
    Ok(variant)
}

fn default_jobs() -> usize {
    std::thread::available_parallelism()
        .map(usize::from)
        .unwrap_or(2)
}

/// Safety outranks liveness, as in `Verdict::combine`.
fn verdict_of(outcomes: &[Outcome]) -> Verdict {
    let violations = outcomes.iter().flat_map(|outcome| &outcome.violations);
    violations.fold(Verdict::Holds, |verdict, violation| {
        let found = if violation.liveness {
            Verdict::LivenessViolation
        } else {
            Verdict::SafetyViolation
        };
        verdict.combine(found)
    })
}

#[derive(Debug, serde::Serialize)]
struct SimReport<'a> {
    scenario: &'a str,
    variant: &'a str,
    first_seed: u64,
    jobs: usize,
    summary: BatchSummary,
    simulated_s: f64,
    wall_s: f64,
    seeds_per_minute: f64,
    simulated_per_wall: f64,
    failures: Vec<&'a Outcome>,
}

pub fn sim(args: SimArgs) -> anyhow::Result<Verdict> {
    let scenario = scenario_named(&args.scenario, args.from_dir.as_deref())?;
    let scenario = scenario.as_ref();
    let variant = variant_or_default(scenario, args.variant)?;
    if args.seeds == 0 {
        bail!("--seeds 0 would check nothing: expected at least one seed");
    }
    let jobs = args.jobs.unwrap_or_else(default_jobs);
    if jobs == 0 {
        bail!("--jobs 0: expected at least one worker thread");
    }
    let first_seed = args.seed.unwrap_or(CI_BASE_SEED);
    let Some(last_seed) = first_seed.checked_add(args.seeds - 1) else {
        bail!(
            "--seed {first_seed} --seeds {}: the last seed would pass {}; expected a range \
             that ends within u64",
            args.seeds,
            u64::MAX
        );
    };
    let settings = scenario.settings();
    crate::output::note!(
        "sim {}: variant={variant} seeds={first_seed}..{last_seed} jobs={jobs}{}{settings}",
        scenario.name(),
        if settings.is_empty() { "" } else { " " },
    );
    let bar = progress_bar(args.seeds, args.json);
    let started = Instant::now();
    let on_done = |outcome: &Outcome| {
        bar.inc(1);
        if !outcome.passed() {
            bar.set_message(format!("first failures: seed {}", outcome.seed));
        }
    };
    let outcomes = run_batch(scenario, &variant, first_seed, args.seeds, jobs, &on_done);
    bar.finish_and_clear();
    let wall = started.elapsed();
    let summary = BatchSummary::of(&outcomes);
    let failures: Vec<&Outcome> = outcomes
        .iter()
        .filter(|outcome| !outcome.passed())
        .collect();
    let report = SimReport {
        scenario: scenario.name(),
        variant: &variant,
        first_seed,
        jobs,
        simulated_s: summary.simulated_total.as_secs_f64(),
        wall_s: wall.as_secs_f64(),
        seeds_per_minute: summary.seeds_run as f64 / wall.as_secs_f64() * 60.0,
        simulated_per_wall: summary.simulated_total.as_secs_f64() / wall.as_secs_f64(),
        summary,
        failures: failures.iter().take(FAILURE_REPORTS_MAX).copied().collect(),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_sim_report(&report, failures.len());
    }
    Ok(verdict_of(&outcomes))
}

fn progress_bar(length: u64, hidden: bool) -> ProgressBar {
    if hidden {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(length);
    let style =
        ProgressStyle::with_template("{bar:40} {pos}/{len} seeds {per_sec} eta {eta} {msg}")
            .expect("a valid progress template");
    bar.set_style(style);
    bar
}

fn print_sim_report(report: &SimReport, failure_count: usize) {
    for failure in &report.failures {
        println!("{}", failure.failure_report(report.scenario));
    }
    if failure_count > report.failures.len() {
        println!(
            "... and {} more failing seeds",
            failure_count - report.failures.len()
        );
    }
    let summary = &report.summary;
    println!(
        "seeds run: {}  failed: {}  simulated: {:.1} s  wall: {:.2} s  ({:.0} seeds/min, \
         {:.0}x real time)",
        summary.seeds_run,
        summary.seeds_failed,
        report.simulated_s,
        report.wall_s,
        report.seeds_per_minute,
        report.simulated_per_wall
    );
    if summary.failures_by_oracle.is_empty() {
        println!("failures by oracle: none");
    } else {
        let by_oracle: Vec<String> = summary
            .failures_by_oracle
            .iter()
            .map(|(oracle, count)| format!("{oracle}={count}"))
            .collect();
        println!("failures by oracle: {}", by_oracle.join(" "));
    }
}

pub fn replay(args: ReplayArgs) -> anyhow::Result<Verdict> {
    let scenario = scenario_named(&args.scenario, args.from_dir.as_deref())?;
    let scenario = scenario.as_ref();
    let variant = variant_or_default(scenario, args.variant)?;
    let outcome = run_seed(scenario, args.seed, &variant);
    println!(
        "replay {} seed={} variant={variant}",
        scenario.name(),
        args.seed
    );
    println!("config: {}", outcome.config);
    println!(
        "{:>13}  {:<9} {:<9} detail",
        "virtual time", "node", "event"
    );
    for event in &outcome.events {
        println!("{event}");
    }
    println!(
        "events={} simulated={:.3}s trace={}",
        outcome.event_count,
        outcome.simulated.as_secs_f64(),
        outcome.trace_hash
    );
    if outcome.passed() {
        println!("verdict: every oracle held");
    } else {
        print!("{}", outcome.failure_report(scenario.name()));
    }
    Ok(verdict_of(std::slice::from_ref(&outcome)))
}

#[derive(Debug, serde::Serialize)]
struct BenchFigures {
    seeds: u64,
    jobs: usize,
    wall_s: f64,
    seeds_per_minute: f64,
    simulated_s: f64,
    simulated_per_wall: f64,
    events_per_seed_mean: f64,
    wall_ms_per_seed_mean: f64,
    seeds_failed: u64,
    fault_mixes: BTreeMap<String, u64>,
}

pub fn bench(args: BenchSimArgs) -> anyhow::Result<Verdict> {
    if cfg!(debug_assertions) {
        crate::output::note!(
            "bench sim: this is a debug build; figures are for `--release` builds"
        );
    }
    let scenario = BackupScenario::default();
    let jobs = default_jobs();
    let started = Instant::now();
    let outcomes = run_batch(
        &scenario,
        "optimistic",
        CI_BASE_SEED,
        args.seeds,
        jobs,
        &|_| {},
    );
    let wall = started.elapsed();
    let summary = BatchSummary::of(&outcomes);
    let mut fault_mixes = BTreeMap::new();
    let with_faults = outcomes
        .iter()
        .filter(|o| o.config.fault_mix() != "none")
        .count();
    fault_mixes.insert("seeds with faults on".to_string(), with_faults as u64);
    fault_mixes.insert(
        "seeds with node kills".to_string(),
        count(&outcomes, |o| o.config.kill_restart),
    );
    let per_seed_wall: Duration = outcomes.iter().map(|o| o.wall).sum();
    let figures = BenchFigures {
        seeds: summary.seeds_run,
        jobs,
        wall_s: wall.as_secs_f64(),
        seeds_per_minute: summary.seeds_run as f64 / wall.as_secs_f64() * 60.0,
        simulated_s: summary.simulated_total.as_secs_f64(),
        simulated_per_wall: summary.simulated_total.as_secs_f64() / wall.as_secs_f64(),
        events_per_seed_mean: outcomes.iter().map(|o| o.event_count as f64).sum::<f64>()
            / outcomes.len() as f64,
        wall_ms_per_seed_mean: per_seed_wall.as_secs_f64() * 1000.0 / outcomes.len() as f64,
        seeds_failed: summary.seeds_failed,
        fault_mixes,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&figures)?);
    } else {
        println!(
            "bench sim backup (3 clients, 2 index shards, 2 stores, swarm faults): {} seeds on \
             {} threads in {:.2} s\n  {:.0} seeds/min (target >= 1000)\n  {:.0}x real time \
             (target >= 100x): {:.1} s simulated\n  {:.1} ms wall per seed per thread, {:.0} \
             events per seed; {} of {} seeds had faults on, {} failed",
            figures.seeds,
            figures.jobs,
            figures.wall_s,
            figures.seeds_per_minute,
            figures.simulated_per_wall,
            figures.simulated_s,
            figures.wall_ms_per_seed_mean,
            figures.events_per_seed_mean,
            with_faults,
            figures.seeds,
            figures.seeds_failed
        );
    }
    Ok(verdict_of(&outcomes))
}

fn count(outcomes: &[Outcome], predicate: impl Fn(&Outcome) -> bool) -> u64 {
    outcomes.iter().filter(|outcome| predicate(outcome)).count() as u64
}

/// Seeds per correct variant in `crosscheck verify`.
const VERIFY_SEEDS: u64 = 300;

/// The simulator's rows for `crosscheck verify`: a batch of seeds of every correct
/// variant (all must pass), a hunt for each planted bug (each must be caught within
/// 1000 seeds), and the determinism self-check.
pub fn verify_rows() -> anyhow::Result<Vec<Row>> {
    let scenario = BackupScenario::default();
    let jobs = default_jobs();
    let mut rows = Vec::new();
    for &variant in scenario.variants() {
        let row = if scenario.is_buggy(variant) {
            let (seeds_run, failure) =
                hunt_first_failure(&scenario, variant, CI_BASE_SEED, CATCH_LIMIT_SEEDS, jobs);
            let detail = match &failure {
                Some(outcome) => format!(
                    "caught after {seeds_run} seed(s) at seed {} by {}",
                    outcome.seed,
                    oracle_names(outcome)
                ),
                None => format!("NOT caught in {seeds_run} seeds"),
            };
            Row {
                area: "sim".into(),
                check: format!("backup {variant} is caught"),
                passed: failure.is_some(),
                detail,
            }
        } else {
            let outcomes = run_batch(
                &scenario,
                variant,
                CI_BASE_SEED,
                VERIFY_SEEDS,
                jobs,
                &|_| {},
            );
            let summary = BatchSummary::of(&outcomes);
            let detail = match summary.first_failing_seed {
                None => format!(
                    "{} seeds, {:.0} s simulated, every oracle held",
                    summary.seeds_run,
                    summary.simulated_total.as_secs_f64()
                ),
                Some(seed) => format!(
                    "{} of {} seeds failed {:?}; replay: cargo run --release -- replay backup \
                     --seed {seed} --variant {variant}",
                    summary.seeds_failed, summary.seeds_run, summary.failures_by_oracle
                ),
            };
            Row {
                area: "sim".into(),
                check: format!("backup {variant} passes every seed"),
                passed: summary.seeds_failed == 0,
                detail,
            }
        };
        rows.push(row);
    }
    rows.push(determinism_row(&scenario).context("running the determinism self-check")?);
    Ok(rows)
}

fn oracle_names(outcome: &Outcome) -> String {
    let names: std::collections::BTreeSet<&str> = outcome
        .violations
        .iter()
        .map(|v| v.oracle.as_str())
        .collect();
    names.into_iter().collect::<Vec<_>>().join(",")
}

fn determinism_row(scenario: &BackupScenario) -> anyhow::Result<Row> {
    let mut hashes = Vec::new();
    for &variant in scenario.variants() {
        match check_determinism(scenario, CI_BASE_SEED, variant) {
            Ok(hash) => hashes.push(format!("{variant}={}", &hash[..8])),
            Err(divergence) => {
                return Ok(Row {
                    area: "sim".into(),
                    check: "a seed replays bit for bit".into(),
                    passed: false,
                    detail: divergence.to_string().replace('\n', " | "),
                });
            }
        }
    }
    Ok(Row {
        area: "sim".into(),
        check: "a seed replays bit for bit".into(),
        passed: true,
        detail: format!(
            "seed {CI_BASE_SEED} twice per variant, traces equal: {}",
            hashes.join(" ")
        ),
    })
}
