//! Running seeds: one fresh OS thread and one fresh madsim runtime per seed.
//!
//! Everything here is generic over the [`Scenario`] (backup today, migration next), so
//! the seed discipline lives in one place: a seed fixes the runtime's randomness, the
//! fault mix ([`SimConfig::from_seed`]) and the scenario's workload; a fresh thread per
//! run keeps thread-locals (rand's generator, HashMap's keys) from leaking between seeds
//! (NOTES.md). A panic inside a run — an assertion in the code under test — is caught
//! and reported as a violation of the seed, never as a crash of the batch.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::config::SimConfig;
use crate::trace::{Event, Trace, Word, first_divergence, hash_events};

/// Virtual time after which madsim aborts a run: a backstop far beyond any scenario's
/// own liveness bound, so a livelock still ends as a reported failure.
const VIRTUAL_TIME_LIMIT: Duration = Duration::from_secs(3_600);

/// What a scenario's run gets: its seed, variant, fault mix and the trace to write.
#[derive(Debug, Clone)]
pub struct RunContext {
    pub seed: u64,
    pub variant: String,
    pub config: SimConfig,
    pub trace: Trace,
}

/// A broken property, found by an oracle during or after a run.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Violation {
    /// The oracle's short name, e.g. `RestoresIdentical`.
    pub oracle: String,
    /// True for "something good never happened" (exit 3), false for safety (exit 1).
    pub liveness: bool,
    pub detail: String,
}

impl Violation {
    pub fn safety(oracle: &str, detail: impl Into<String>) -> Self {
        Self {
            oracle: oracle.to_string(),
            liveness: false,
            detail: detail.into(),
        }
    }

    pub fn liveness(oracle: &str, detail: impl Into<String>) -> Self {
        Self {
            oracle: oracle.to_string(),
            liveness: true,
            detail: detail.into(),
        }
    }
}

/// The future a scenario returns: not `Send`, since a madsim runtime is single-threaded.
pub type RunFuture<'a> = Pin<Box<dyn Future<Output = Vec<Violation>> + 'a>>;

/// A system under simulation: its nodes, workload, faults and oracles.
pub trait Scenario: Sync {
    /// The name on the command line: `backup`.
    fn name(&self) -> &'static str;
    /// Every variant, correct ones first.
    fn variants(&self) -> &'static [&'static str];
    /// True for a variant with a planted bug that a batch of seeds must catch.
    fn is_buggy(&self, variant: &str) -> bool;
    /// Runs one seed to the end, inside a fresh runtime, and returns what the oracles
    /// found. Faults come from `run.config`; events go to `run.trace`.
    fn run<'a>(&'a self, run: RunContext) -> RunFuture<'a>;
    /// Settings beyond the seed's (a workload's source directory), `key=value` for the
    /// start of the trace; empty when there are none.
    fn settings(&self) -> String {
        String::new()
    }
    /// What a replay command needs besides seed and variant (` --from-dir DIR`).
    fn replay_flags(&self) -> String {
        String::new()
    }
}

/// The result of one seed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Outcome {
    pub seed: u64,
    pub variant: String,
    pub config: SimConfig,
    pub violations: Vec<Violation>,
    /// The full trace; batch runs keep it only for failing seeds.
    pub events: Vec<Event>,
    pub event_count: usize,
    pub trace_hash: String,
    pub simulated: Duration,
    pub wall: Duration,
    /// The scenario's [`Scenario::replay_flags`], so the replay command rebuilds this run.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub replay_flags: String,
}

impl Outcome {
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }

    /// The one command that replays this seed.
    pub fn replay_command(&self, scenario: &str) -> String {
        let command = replay_command(scenario, self.seed, &self.variant);
        command + &self.replay_flags
    }
}

pub fn replay_command(scenario: &str, seed: u64, variant: &str) -> String {
    format!("cargo run --release -- replay {scenario} --seed {seed} --variant {variant}")
}

/// Checks that `variant` names one of the scenario's variants.
pub fn check_variant(scenario: &dyn Scenario, variant: &str) -> Result<(), String> {
    if scenario.variants().contains(&variant) {
        return Ok(());
    }
    Err(format!(
        "unknown variant {variant:?} for scenario {}: expected one of {}",
        scenario.name(),
        scenario.variants().join(", ")
    ))
}

/// Runs one seed on a fresh OS thread with a fresh runtime, keeping the whole trace.
pub fn run_seed(scenario: &dyn Scenario, seed: u64, variant: &str) -> Outcome {
    let wall_start = Instant::now();
    let config = SimConfig::from_seed(seed);
    let trace = Trace::new();
    let context = RunContext {
        seed,
        variant: variant.to_string(),
        config,
        trace: trace.clone(),
    };
    let joined = std::thread::scope(|scope| {
        let thread = std::thread::Builder::new().name(format!("seed-{seed}"));
        let handle = thread.spawn_scoped(scope, || run_in_runtime(scenario, context.clone()));
        handle.expect("spawning a simulation thread").join()
    });
    let (mut violations, simulated) = match joined {
        Ok(result) => result,
        Err(payload) => {
            let message = panic_message(&payload);
            let at = trace
                .events()
                .last()
                .map(|event| event.at)
                .unwrap_or_default();
            (
                vec![Violation::safety(
                    "panic",
                    format!("the run panicked: {message}"),
                )],
                at,
            )
        }
    };
    violations.sort_by(|a, b| (&a.oracle, &a.detail).cmp(&(&b.oracle, &b.detail)));
    let events = trace.events();
    Outcome {
        seed,
        variant: variant.to_string(),
        config: context.config,
        violations,
        event_count: events.len(),
        trace_hash: hash_events(&events),
        events,
        simulated,
        wall: wall_start.elapsed(),
        replay_flags: scenario.replay_flags(),
    }
}

fn run_in_runtime(scenario: &dyn Scenario, context: RunContext) -> (Vec<Violation>, Duration) {
    let mut runtime =
        madsim::runtime::Runtime::with_seed_and_config(context.seed, madsim::Config::default());
    runtime.set_time_limit(VIRTUAL_TIME_LIMIT);
    runtime.block_on(async move {
        let mut start = format!(
            "seed={} variant={} scenario={} {}",
            context.seed,
            context.variant,
            scenario.name(),
            context.config
        );
        let settings = scenario.settings();
        if !settings.is_empty() {
            start = format!("{start} {settings}");
        }
        context.trace.record("harness", Word::Start, start);
        let trace = context.trace.clone();
        let violations = scenario.run(context).await;
        for violation in &violations {
            let detail = format!("oracle={} {}", violation.oracle, violation.detail);
            trace.record("harness", Word::Violation, detail);
        }
        let simulated = madsim::time::TimeHandle::current().elapsed();
        reap_nodes().await;
        (violations, simulated)
    })
}

/// Kills every named node and lets the executor drop their tasks. madsim 0.2.34 does not
/// cancel tasks when a runtime is dropped, and a node's task that holds an endpoint or a
/// handle forms a cycle with the runtime's own state, so without this every seed leaked
/// its whole cluster (about 0.6 MB a seed: a 100,000-seed run was killed for memory).
/// Runs after the oracles and the simulated time are taken, so no result depends on it.
async fn reap_nodes() {
    let handle = madsim::runtime::Handle::current();
    let names = handle.metrics().num_tasks_by_node().into_keys();
    // madsim names an unnamed node `node-<id>`, which it cannot look up; ours are named.
    let unnamed = |name: &str| {
        let digits = name.strip_prefix("node-");
        digits.is_some_and(|digits| digits.bytes().all(|byte| byte.is_ascii_digit()))
    };
    for name in names.filter(|name| !unnamed(name)) {
        handle.kill(name.as_str());
    }
    // Killed tasks are dropped when the executor next takes them from its queue.
    madsim::time::sleep(Duration::from_millis(1)).await;
}

fn panic_message(payload: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        text.to_string()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "a non-text panic payload".to_string()
    }
}

/// Runs seeds `first_seed..first_seed + seed_count` on `jobs` worker threads, each seed
/// on its own fresh thread. `on_done` sees every outcome as it finishes (for progress
/// bars). Passing outcomes drop their trace to keep memory flat; results come back sorted
/// by seed.
pub fn run_batch(
    scenario: &dyn Scenario,
    variant: &str,
    first_seed: u64,
    seed_count: u64,
    jobs: usize,
    on_done: &(dyn Fn(&Outcome) + Sync),
) -> Vec<Outcome> {
    assert!(jobs >= 1, "a batch needs at least one worker");
    let next = AtomicU64::new(0);
    // Room for a usual batch up front; a vast one grows as it runs.
    let outcomes = Mutex::new(Vec::with_capacity(seed_count.min(1 << 16) as usize));
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| {
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    if index >= seed_count {
                        break;
                    }
                    let mut outcome = run_seed(scenario, first_seed.wrapping_add(index), variant);
                    if outcome.passed() {
                        outcome.events = Vec::new();
                    }
                    on_done(&outcome);
                    outcomes
                        .lock()
                        .expect("no worker panics holding it")
                        .push(outcome);
                }
            });
        }
    });
    let mut outcomes = outcomes.into_inner().expect("workers are done");
    outcomes.sort_by_key(|outcome| outcome.seed);
    assert_eq!(outcomes.len() as u64, seed_count);
    outcomes
}

/// Figures of a batch, for the CLI summary and for tests.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct BatchSummary {
    pub seeds_run: u64,
    pub seeds_failed: u64,
    /// How many seeds each oracle failed (a seed may fail several).
    pub failures_by_oracle: BTreeMap<String, u64>,
    pub simulated_total: Duration,
    pub first_failing_seed: Option<u64>,
}

impl BatchSummary {
    pub fn of(outcomes: &[Outcome]) -> Self {
        let mut summary = Self {
            seeds_run: outcomes.len() as u64,
            ..Self::default()
        };
        for outcome in outcomes {
            summary.simulated_total += outcome.simulated;
            if outcome.passed() {
                continue;
            }
            summary.seeds_failed += 1;
            summary.first_failing_seed.get_or_insert(outcome.seed);
            let oracles: std::collections::BTreeSet<&str> = outcome
                .violations
                .iter()
                .map(|v| v.oracle.as_str())
                .collect();
            for oracle in oracles {
                *summary
                    .failures_by_oracle
                    .entry(oracle.to_string())
                    .or_default() += 1;
            }
        }
        summary
    }
}

/// Where two runs of one seed first differed.
#[derive(Debug, Clone)]
pub struct Divergence {
    pub seed: u64,
    pub index: usize,
    pub first: Option<Event>,
    pub second: Option<Event>,
}

impl std::fmt::Display for Divergence {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |event: &Option<Event>| match event {
            Some(event) => event.to_string(),
            None => "(trace ended)".to_string(),
        };
        write!(
            formatter,
            "seed {} is not deterministic: event {} differs\n  first run:  {}\n  second run: {}",
            self.seed,
            self.index,
            show(&self.first),
            show(&self.second)
        )
    }
}

/// Runs `seed` twice in fresh runtimes on fresh threads and compares the full traces.
/// Returns the trace hash when they agree.
pub fn check_determinism(
    scenario: &dyn Scenario,
    seed: u64,
    variant: &str,
) -> Result<String, Box<Divergence>> {
    let first = run_seed(scenario, seed, variant);
    let second = run_seed(scenario, seed, variant);
    match first_divergence(&first.events, &second.events) {
        None => Ok(first.trace_hash),
        Some(index) => Err(Box::new(Divergence {
            seed,
            index,
            first: first.events.get(index).cloned(),
            second: second.events.get(index).cloned(),
        })),
    }
}

impl Outcome {
    /// What a failing seed prints: seed, variant, fault mix, each violated oracle, and
    /// the one command that replays it.
    pub fn failure_report(&self, scenario: &str) -> String {
        let mut report = format!(
            "FAILED seed={} variant={} faults={} simulated={:.3}s events={} trace={}\n",
            self.seed,
            self.variant,
            self.config.fault_mix(),
            self.simulated.as_secs_f64(),
            self.event_count,
            self.trace_hash
        );
        for violation in &self.violations {
            let kind = if violation.liveness {
                "liveness"
            } else {
                "safety"
            };
            report.push_str(&format!(
                "  {kind} oracle {}: {}\n",
                violation.oracle, violation.detail
            ));
        }
        report.push_str(&format!("  config: {}\n", self.config));
        report.push_str(&format!("  replay: {}\n", self.replay_command(scenario)));
        report
    }
}

/// Runs CI's batch of `variant` (see [`ci_seed_count`]) from [`CI_BASE_SEED`] and
/// panics with every failing seed's report, replay command included, unless every seed
/// passed. A batch that ran zero seeds fails too: it would prove nothing.
///
/// # Panics
/// When a seed fails, or when fewer seeds ran than asked for.
pub fn assert_every_ci_seed_passes(
    scenario: &dyn Scenario,
    variant: &str,
    default_seeds: u64,
    jobs: usize,
) {
    let seed_count = ci_seed_count(default_seeds);
    let outcomes = run_batch(scenario, variant, CI_BASE_SEED, seed_count, jobs, &|_| {});
    let summary = BatchSummary::of(&outcomes);
    assert!(
        summary.seeds_run > 0,
        "a simulation test that ran zero seeds proves nothing"
    );
    assert_eq!(summary.seeds_run, seed_count);
    let failures: Vec<String> = outcomes
        .iter()
        .filter(|outcome| !outcome.passed())
        .map(|outcome| outcome.failure_report(scenario.name()))
        .collect();
    assert!(
        failures.is_empty(),
        "{variant}: {summary:?}\n{}",
        failures.join("\n")
    );
    println!(
        "{variant}: {} seeds passed, {:.1} s simulated",
        summary.seeds_run,
        summary.simulated_total.as_secs_f64()
    );
}

/// The fixed base seed of CI batches, so every `cargo test` runs the same seeds.
pub const CI_BASE_SEED: u64 = 20_261_203;

/// Seeds per CI batch: `default`, or `CROSSCHECK_SIM_SEEDS` when set (to run more).
/// A malformed value is refused loudly rather than silently running the default.
pub fn ci_seed_count(default: u64) -> u64 {
    match std::env::var("CROSSCHECK_SIM_SEEDS") {
        Ok(text) => text.trim().parse().unwrap_or_else(|_| {
            panic!("CROSSCHECK_SIM_SEEDS={text:?}: expected a whole number of seeds, like 5000")
        }),
        Err(_) => default,
    }
}

/// Runs seeds from `first_seed` upward, in rounds of `jobs * 8`, until one fails or
/// `seed_limit` seeds have run; returns how many ran and the first failure.
pub fn hunt_first_failure(
    scenario: &dyn Scenario,
    variant: &str,
    first_seed: u64,
    seed_limit: u64,
    jobs: usize,
) -> (u64, Option<Outcome>) {
    let round = (jobs as u64 * 8).max(1);
    let mut seeds_run = 0;
    while seeds_run < seed_limit {
        let count = round.min(seed_limit - seeds_run);
        let outcomes = run_batch(
            scenario,
            variant,
            first_seed + seeds_run,
            count,
            jobs,
            &|_| {},
        );
        if let Some(failure) = outcomes.into_iter().find(|outcome| !outcome.passed()) {
            return (failure.seed - first_seed + 1, Some(failure));
        }
        seeds_run += count;
    }
    (seeds_run, None)
}
