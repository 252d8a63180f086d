//! `check`, `explore`, `tlc` and `bench models`: stateright and TLC on the same designs.
//!
//! The one idea: every finding is shown twice, once as stateright found it and once as the
//! real TLC found it on the spec, step beside step, so a reader sees that the two tools
//! agree (or exactly where they do not). The model crate does the work; this file parses
//! arguments, prints, and turns findings into exit codes.

use std::fmt::Write as _;

use anyhow::Context;
use clap::Args;
use model::crosscheck;
use model::tlc::{TlcRun, TlcVerdict};
use model::{
    CheckOptions, CheckReport, Finding, ModelEntry, Params, PropertyKind, PropertyOutcome, Status,
    TraceStep, VariantSpec,
};

use crate::verdict::Verdict;
use crate::verify::Row;

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The model: `migration` or `dedup`.
    pub model: String,
    /// The variant: for `migration`, naive (the default) or fixed; for
    /// `dedup`, naive (the default), optimistic or pessimistic.
    #[arg(long)]
    pub variant: Option<String>,
    /// A model parameter, NAME=VALUE; repeat for several.
    #[arg(long = "param", value_name = "NAME=VALUE")]
    pub params: Vec<String>,
    /// Skip the TLC half (stateright only).
    #[arg(long)]
    pub no_tlc: bool,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ExploreArgs {
    /// The model: `migration` or `dedup`.
    pub model: String,
    /// The variant: for `migration`, naive (the default) or fixed; for
    /// `dedup`, naive (the default), optimistic or pessimistic.
    #[arg(long)]
    pub variant: Option<String>,
    /// A model parameter, NAME=VALUE; repeat for several.
    #[arg(long = "param", value_name = "NAME=VALUE")]
    pub params: Vec<String>,
    /// The address to serve on (loopback by default).
    #[arg(long, default_value = "127.0.0.1:3000")]
    pub address: String,
}

#[derive(Debug, Args)]
pub struct TlcArgs {
    /// The model: `migration` or `dedup`.
    pub model: String,
    /// The variant: for `migration`, naive (the default) or fixed; for
    /// `dedup`, naive (the default), optimistic or pessimistic.
    #[arg(long)]
    pub variant: Option<String>,
    /// A model parameter, NAME=VALUE; repeat for several.
    #[arg(long = "param", value_name = "NAME=VALUE")]
    pub params: Vec<String>,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct BenchModelsArgs {
    /// stateright threads and TLC workers (default: every core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Benchmark only this model (default: every configuration in the list).
    #[arg(long)]
    pub model: Option<String>,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

/// The model, variant and parameters named on the command line, validated.
fn resolve(
    model: &str,
    variant: Option<&str>,
    params: &[String],
) -> anyhow::Result<(&'static dyn ModelEntry, &'static VariantSpec, Params)> {
    let entry = model::find_model(model)?;
    let variant = model::find_variant(entry, variant)?;
    let params = model::resolve_params(entry, params)?;
    Ok((entry, variant, params))
}

fn verdict_of(finding: Finding) -> Verdict {
    match finding {
        Finding::Holds => Verdict::Holds,
        Finding::SafetyViolation => Verdict::SafetyViolation,
        Finding::LivenessViolation => Verdict::LivenessViolation,
    }
}

fn verdict_of_tlc(verdict: TlcVerdict) -> Verdict {
    match verdict {
        TlcVerdict::Holds => Verdict::Holds,
        TlcVerdict::SafetyViolation | TlcVerdict::Deadlock => Verdict::SafetyViolation,
        TlcVerdict::LivenessViolation => Verdict::LivenessViolation,
    }
}

pub fn check(args: CheckArgs) -> anyhow::Result<Verdict> {
    let (entry, variant, params) = resolve(&args.model, args.variant.as_deref(), &args.params)?;
    let report = entry.check(variant, &params, &CheckOptions::default());
    if !args.json {
        print!("{}", render_report(entry, &report));
    }
    let mut tlc_runs: Vec<(&'static str, TlcRun)> = Vec::new();
    if !args.no_tlc {
        tlc_runs = run_tlc_beside(entry, variant, &params, &report, args.json)?;
    }
    if args.json {
        let tlc: Vec<serde_json::Value> = tlc_runs
            .iter()
            .map(|(property, run)| serde_json::json!({ "property": property, "run": run }))
            .collect();
        let json = serde_json::json!({ "stateright": report, "tlc": tlc,
            "finding": report.finding() });
        println!("{}", serde_json::to_string_pretty(&json)?);
    }
    Ok(verdict_of(report.finding()))
}

/// TLC on the same model and parameters: one run per violated property (TLC stops at its
/// first violation, so each property gets its own run and its own shortest trace), or one
/// full run when stateright found nothing.
fn run_tlc_beside(
    entry: &dyn ModelEntry,
    variant: &VariantSpec,
    params: &Params,
    report: &CheckReport,
    json: bool,
) -> anyhow::Result<Vec<(&'static str, TlcRun)>> {
    let mut runs = Vec::new();
    let violated: Vec<&PropertyOutcome> = report
        .properties
        .iter()
        .filter(|outcome| outcome.status == Status::Violated)
        .collect();
    if violated.is_empty() {
        let run = crosscheck::run_tlc(entry, variant, params).context("running TLC")?;
        if !json {
            println!(
                "TLC on {}: {:?}, {} distinct states, {} generated, {:.1} s",
                model::cfg_file_name(entry, variant),
                run.verdict,
                run.states_distinct,
                run.states_generated,
                run.elapsed_seconds
            );
        }
        runs.push(("(all)", run));
        return Ok(runs);
    }
    for outcome in violated {
        let spec = entry
            .properties()
            .iter()
            .find(|spec| spec.name == outcome.name)
            .expect("report properties come from the registry");
        let run = crosscheck::run_tlc_for_property(entry, variant, params, spec)
            .with_context(|| format!("running TLC on {}", outcome.name))?;
        if !json {
            print!("{}", render_beside(entry.spec_module(), outcome, &run));
        }
        runs.push((outcome.name, run));
    }
    Ok(runs)
}

/// stateright's findings: counts, then every property, with the trace of each violation.
fn render_report(entry: &dyn ModelEntry, report: &CheckReport) -> String {
    let mut text = String::new();
    let _ = writeln!(
        text,
        "stateright: {} variant `{}` at {}: {} distinct states, {} \
        generated, depth {}, {:.2} s",
        report.model,
        report.variant,
        report.params,
        report.states_distinct,
        report.states_generated,
        report.depth_max,
        report.elapsed_seconds
    );
    for outcome in &report.properties {
        let length = outcome.trace.as_ref().map_or(0, |trace| trace.len() - 1);
        let found = match outcome.status {
            Status::Holds => "holds".to_string(),
            Status::Violated => format!("VIOLATED in {length} steps"),
            Status::Reached => format!("reached in {length} steps"),
            Status::NeverReached => "NEVER REACHED (the model does not exercise it)".to_string(),
        };
        let _ = writeln!(
            text,
            "  {:<8} {:<22} {found}",
            kind_label(outcome.kind),
            outcome.name
        );
    }
    for outcome in report
        .properties
        .iter()
        .filter(|o| o.status == Status::Violated)
    {
        let _ = writeln!(
            text,
            "\n{} `{}` violated: {}",
            kind_label(outcome.kind),
            outcome.name,
            outcome.about
        );
        let trace = outcome.trace.as_deref().unwrap_or_default();
        text.push_str(&render_trace(entry.spec_module(), trace));
    }
    text
}

fn kind_label(kind: PropertyKind) -> &'static str {
    match kind {
        PropertyKind::Safety => "safety",
        PropertyKind::Liveness => "liveness",
        PropertyKind::Sometimes => "sometimes",
    }
}

/// One step per block: number, action in TLA+ syntax, the spec's file:line, then the state.
pub fn render_trace(module: &str, trace: &[TraceStep]) -> String {
    let mut text = String::new();
    for (index, step) in trace.iter().enumerate() {
        let action = step
            .action
            .as_ref()
            .map_or("Init".to_string(), ToString::to_string);
        let location = step
            .spec_line
            .map_or(String::new(), |line| format!("{module}.tla:{line}"));
        let _ = writeln!(text, "  {:>3}  {action:<60} {location}", index);
        for (name, value) in &step.state {
            let _ = writeln!(text, "         /\\ {name} = {value}");
        }
    }
    text
}

/// TLC's own trace for the same property, step beside stateright's.
fn render_beside(module: &str, outcome: &PropertyOutcome, run: &TlcRun) -> String {
    let mut text = String::new();
    let ours = outcome.trace.as_deref().unwrap_or_default();
    let _ = writeln!(
        text,
        "\nTLC on `{}` alone: {:?} ({}), {} steps; stateright: {} steps",
        outcome.name,
        run.verdict,
        run.violated.as_deref().unwrap_or("-"),
        run.trace.len().saturating_sub(1),
        ours.len().saturating_sub(1)
    );
    if outcome.kind == PropertyKind::Liveness {
        let _ = writeln!(
            text,
            "  (TLC finds a liveness counterexample by searching for a \
            behaviour that stalls, not breadth-first: its trace need not be a shortest one)"
        );
    }
    let _ = writeln!(
        text,
        "  {:>3}  {:<60} {:<28} states",
        "#", "stateright", "TLC"
    );
    for index in 0..ours.len().max(run.trace.len()) {
        let left = ours.get(index).map_or("-".to_string(), |step| {
            step.action
                .as_ref()
                .map_or("Init".to_string(), ToString::to_string)
        });
        let right = run.trace.get(index).map_or("-".to_string(), |step| {
            let line = step
                .spec_line
                .map_or(String::new(), |line| format!(" {module}.tla:{line}"));
            format!("{}{line}", step.action.as_deref().unwrap_or("Init"))
        });
        let same = match (ours.get(index), run.trace.get(index)) {
            (Some(a), Some(b)) if a.state == b.state => "same",
            (Some(_), Some(_)) => "differ",
            _ => "",
        };
        let _ = writeln!(text, "  {index:>3}  {left:<60} {right:<28} {same}");
    }
    if let Some(last) = run.trace.last() {
        let _ = writeln!(text, "  TLC's last state:");
        for (name, value) in &last.state {
            let _ = writeln!(text, "         /\\ {name} = {value}");
        }
    }
    text
}

pub fn explore(args: ExploreArgs) -> anyhow::Result<Verdict> {
    let (entry, variant, params) = resolve(&args.model, args.variant.as_deref(), &args.params)?;
    let ready = |address: &str| {
        println!(
            "stateright Explorer for {} `{}` at {params}: http://{address}/ \
                  (Ctrl-C to stop)",
            entry.name(),
            variant.name
        );
    };
    entry.explore(variant, &params, &args.address, &ready)?;
    Ok(Verdict::Holds)
}

pub fn tlc(args: TlcArgs) -> anyhow::Result<Verdict> {
    let (entry, variant, params) = resolve(&args.model, args.variant.as_deref(), &args.params)?;
    let run = crosscheck::run_tlc(entry, variant, &params).context("running TLC")?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&run)?);
    } else {
        println!(
            "TLC on {} ({} variant `{}` at {params}): {:?}{}; {} distinct states, {} \
                  generated, {:.1} s",
            model::cfg_file_name(entry, variant),
            entry.name(),
            variant.name,
            run.verdict,
            run.violated
                .as_deref()
                .map_or(String::new(), |name| format!(" ({name})")),
            run.states_distinct,
            run.states_generated,
            run.elapsed_seconds
        );
        for (index, step) in run.trace.iter().enumerate() {
            let line = step.spec_line.map_or(String::new(), |line| {
                format!("{}.tla:{line}", entry.spec_module())
            });
            println!(
                "  {index:>3}  {:<30} {line}",
                step.action.as_deref().unwrap_or("Init")
            );
            for (name, value) in &step.state {
                println!("         /\\ {name} = {value}");
            }
        }
    }
    Ok(verdict_of_tlc(run.verdict))
}

/// `bench models`: every configuration of [`model::bench::CONFIGURATIONS`], both tools.
pub fn bench(args: BenchModelsArgs) -> anyhow::Result<Verdict> {
    let threads = args.threads.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    let mut rows = Vec::new();
    for (name, variant, params) in model::bench::CONFIGURATIONS {
        if args.model.as_deref().is_some_and(|wanted| wanted != *name) {
            continue;
        }
        let params: Vec<String> = params.iter().map(ToString::to_string).collect();
        crate::output::note!(
            "bench: {name} {variant} {} with {threads} threads ...",
            params.join(" ")
        );
        let row = model::bench::bench_one(name, variant, &params, threads)?;
        if !args.json {
            print!("{}", render_bench_row(&row));
        }
        rows.push(row);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    }
    Ok(Verdict::Holds)
}

fn render_bench_row(row: &model::bench::BenchRow) -> String {
    let mut text = String::new();
    let _ = writeln!(text, "{} {} at {}:", row.model, row.variant, row.params);
    let _ = writeln!(
        text,
        "  {:<11} {:>18} {:>9} {:>12} {:>16} {:>12} {:>14}",
        "tool", "verdict", "seconds", "distinct", "distinct/s", "peak MiB", "MiB/M states"
    );
    for (tool, figures) in [("stateright", &row.stateright), ("TLC", &row.tlc)] {
        let mebibytes = figures.peak_rss_bytes as f64 / (1024.0 * 1024.0);
        let per_million = figures.peak_rss_bytes_per_million_states / (1024.0 * 1024.0);
        let _ = writeln!(
            text,
            "  {tool:<11} {:>18} {:>9.2} {:>12} {:>16.0} {:>12.1} {:>14.1}",
            figures.verdict,
            figures.seconds,
            figures.states_distinct,
            figures.distinct_per_second,
            mebibytes,
            per_million
        );
    }
    let _ = writeln!(
        text,
        "  verdict {:.1}x sooner than TLC (target 10x); {:.1}x the distinct \
        states per second",
        row.verdict_speedup, row.distinct_per_second_ratio
    );
    text
}

/// `verify`'s rows: every model and variant at its default parameters, stateright to
/// completion. A variant meant to be caught passes when a violation is found; the others
/// pass when everything holds. Either way every `sometimes` must be reached.
pub fn verify_rows() -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    for entry in model::registry() {
        let params = model::default_params(entry);
        for variant in entry.variants() {
            let report = entry.check(variant, &params, &CheckOptions::default());
            rows.push(verify_row(entry, variant, &report));
            rows.push(verify_tlc_row(entry, variant, &params, &report));
        }
    }
    Ok(rows)
}

/// The real TLC on the same spec and parameters, beside stateright: where
/// stateright found nothing, TLC must hold too, over the same number of
/// distinct states; where stateright caught the variant, TLC must find its
/// first violated property as well. A TLC that cannot run fails the row.
fn verify_tlc_row(
    entry: &dyn ModelEntry,
    variant: &VariantSpec,
    params: &Params,
    report: &CheckReport,
) -> Row {
    let violated = report
        .properties
        .iter()
        .find(|outcome| outcome.status == Status::Violated);
    let (passed, detail) = match violated {
        None => match crosscheck::run_tlc(entry, variant, params) {
            Ok(run) => (
                run.verdict == TlcVerdict::Holds
                    && run.states_distinct == report.states_distinct as u64,
                format!(
                    "TLC {:?}, {} distinct states (stateright {}), {:.1} s",
                    run.verdict, run.states_distinct, report.states_distinct, run.elapsed_seconds
                ),
            ),
            Err(error) => (false, format!("TLC could not run: {error}")),
        },
        Some(outcome) => {
            let spec = entry
                .properties()
                .iter()
                .find(|spec| spec.name == outcome.name)
                .expect("report properties come from the registry");
            match crosscheck::run_tlc_for_property(entry, variant, params, spec) {
                Ok(run) => {
                    let steps = |length: usize| length.saturating_sub(1);
                    let stateright_steps = outcome.trace.as_ref().map_or(0, |t| steps(t.len()));
                    (
                        run.verdict != TlcVerdict::Holds,
                        format!(
                            "TLC {:?} of {} in {} steps (stateright {}), {:.1} s",
                            run.verdict,
                            outcome.name,
                            steps(run.trace.len()),
                            stateright_steps,
                            run.elapsed_seconds
                        ),
                    )
                }
                Err(error) => (false, format!("TLC could not run: {error}")),
            }
        }
    };
    Row {
        area: "models".to_string(),
        check: format!(
            "{} {} on TLC, beside stateright",
            entry.name(),
            variant.name
        ),
        passed,
        detail,
    }
}

fn verify_row(entry: &dyn ModelEntry, variant: &VariantSpec, report: &CheckReport) -> Row {
    let violated: Vec<String> = report
        .properties
        .iter()
        .filter(|outcome| outcome.status == Status::Violated)
        .map(|outcome| {
            let steps = outcome.trace.as_ref().map_or(0, |trace| trace.len() - 1);
            format!("{}({steps})", outcome.name)
        })
        .collect();
    let unreached: Vec<&str> = report
        .properties
        .iter()
        .filter(|outcome| outcome.status == Status::NeverReached)
        .map(|outcome| outcome.name)
        .collect();
    let caught = !violated.is_empty();
    let passed = unreached.is_empty() && caught == variant.expect_violation;
    let mut detail = format!("{} states; ", report.states_distinct);
    if caught {
        detail.push_str(&format!("violated: {}", violated.join(" ")));
    } else {
        detail.push_str("every property holds");
    }
    if !unreached.is_empty() {
        detail.push_str(&format!("; never reached: {}", unreached.join(" ")));
    }
    let expectation = if variant.expect_violation {
        "must be caught"
    } else {
        "must hold"
    };
    Row {
        area: "models".to_string(),
        check: format!(
            "{} {} ({expectation}) at {}",
            entry.name(),
            variant.name,
            report.params
        ),
        passed,
        detail,
    }
}
