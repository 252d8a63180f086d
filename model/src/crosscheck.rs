//! Cross-checks a stateright model against its TLA+ spec under the real TLC: equal state
//! counts, and every stateright trace replayed by TLC as a behaviour of the spec.
//!
//! The one idea: stateright and TLC are two independent implementations of the same state
//! machine, so they must agree on everything observable. Counts are compared on full runs
//! (stateright with no early finish, TLC with `-continue`). A trace is confirmed by a
//! generated module that EXTENDS the spec, pins each state of the trace in turn
//! (`TraceNext` is the spec's `Next` constrained to produce the next recorded state), and
//! declares the invariant `ViolationNotReached` (or `WitnessNotReached` for `sometimes`),
//! which is false exactly in the last trace state if that state has the property's finding.
//! TLC reporting that invariant violated, after as many states as the trace has, is the
//! confirmation; anything else means the two tools disagree.
//!
//! A liveness property `P` must be written `P == <>PGoal` in the spec with `PGoal` a state
//! predicate; its counterexample (on an acyclic graph) ends in a state with no step where
//! `PGoal` is false, which is what the trace module checks.

use serde::Serialize;

use crate::tlc::{self, TlcError, TlcJob, TlcRun, TlcVerdict};
use crate::{
    CheckOptions, CheckReport, ModelEntry, ModelError, Params, PropertyKind, PropertyOutcome,
    PropertySpec, Status, TraceStep, VariantSpec,
};

/// The TLC job for the spec itself at a variant and parameters.
pub fn spec_job(
    entry: &dyn ModelEntry,
    variant: &VariantSpec,
    params: &Params,
    keep_going: bool,
    workers: usize,
) -> TlcJob {
    let module_file = format!("{}.tla", entry.spec_module());
    let cfg_file = crate::cfg_file_name(entry, variant);
    TlcJob {
        files: vec![
            (module_file.clone(), entry.spec_source().to_string()),
            (cfg_file.clone(), crate::cfg_text(entry, variant, params)),
        ],
        module_file,
        cfg_file,
        keep_going,
        workers,
        quick_start: true,
    }
}

/// Runs TLC on the spec (one worker, stopping at the first violation as TLC does).
pub fn run_tlc(
    entry: &dyn ModelEntry,
    variant: &VariantSpec,
    params: &Params,
) -> Result<TlcRun, TlcError> {
    tlc::run(&spec_job(entry, variant, params, false, 1))
}

/// Runs TLC on the spec checking only `property` (a safety or liveness one), so that TLC
/// gives its own shortest trace for each property rather than only for the first it hits.
pub fn run_tlc_for_property(
    entry: &dyn ModelEntry,
    variant: &VariantSpec,
    params: &Params,
    property: &PropertySpec,
) -> Result<TlcRun, TlcError> {
    let mut job = spec_job(entry, variant, params, false, 1);
    let mut cfg = constants_cfg(entry, variant, params, "Spec");
    cfg.push_str(&format!(
        "{} {}\n",
        cfg_keyword(property.kind),
        property.name
    ));
    job.files[1].1 = cfg;
    tlc::run(&job)
}

/// Runs TLC on the spec checking only the named invariants (for definitions outside the
/// registry's properties, such as a spec's own sanity checks).
pub fn run_tlc_with_invariants(
    entry: &dyn ModelEntry,
    variant: &VariantSpec,
    params: &Params,
    invariants: &[&str],
) -> Result<TlcRun, TlcError> {
    let mut job = spec_job(entry, variant, params, false, 1);
    let mut cfg = constants_cfg(entry, variant, params, "Spec");
    for name in invariants {
        cfg.push_str(&format!("INVARIANT {name}\n"));
    }
    job.files[1].1 = cfg;
    tlc::run(&job)
}

fn cfg_keyword(kind: PropertyKind) -> &'static str {
    match kind {
        PropertyKind::Safety => "INVARIANT",
        PropertyKind::Liveness => "PROPERTY",
        PropertyKind::Sometimes => panic!("TLC has no `sometimes` properties"),
    }
}

/// A cfg's `SPECIFICATION` and `CONSTANTS` sections.
fn constants_cfg(
    entry: &dyn ModelEntry,
    variant: &VariantSpec,
    params: &Params,
    specification: &str,
) -> String {
    let mut cfg = format!("SPECIFICATION {specification}\nCONSTANTS\n");
    for (name, value) in entry.tlc_constants(variant, params) {
        cfg.push_str(&format!("    {name} = {value}\n"));
    }
    cfg
}

/// The spec's cfg with only the properties of one kind.
fn restricted_cfg(
    entry: &dyn ModelEntry,
    variant: &VariantSpec,
    params: &Params,
    kind: PropertyKind,
) -> String {
    let mut cfg = constants_cfg(entry, variant, params, "Spec");
    for spec in entry.properties().iter().filter(|spec| spec.kind == kind) {
        cfg.push_str(&format!("{} {}\n", cfg_keyword(kind), spec.name));
    }
    cfg
}

/// Both tools' counts on full runs of the same model and parameters.
#[derive(Debug, Clone, Serialize)]
pub struct CountComparison {
    pub stateright_distinct: u64,
    pub stateright_generated: u64,
    pub tlc_distinct: u64,
    pub tlc_generated: u64,
}

impl CountComparison {
    pub fn agree(&self) -> bool {
        self.stateright_distinct == self.tlc_distinct
            && self.stateright_generated == self.tlc_generated
    }
}

/// Runs both tools to completion and returns their counts.
pub fn compare_counts(
    entry: &dyn ModelEntry,
    variant: &VariantSpec,
    params: &Params,
) -> Result<CountComparison, TlcError> {
    let report = entry.check(
        variant,
        params,
        &CheckOptions {
            threads: 1,
            traces: false,
            stop_at_first_violation: false,
        },
    );
    // Invariants only: TLC checks liveness periodically during a run and stops at a
    // temporal violation even with `-continue`, which would cut the count short.
    let mut job = spec_job(entry, variant, params, true, 1);
    job.files[1].1 = restricted_cfg(entry, variant, params, PropertyKind::Safety);
    let run = tlc::run(&job)?;
    Ok(CountComparison {
        stateright_distinct: report.states_distinct as u64,
        stateright_generated: report.states_generated as u64,
        tlc_distinct: run.states_distinct,
        tlc_generated: run.states_generated,
    })
}

/// The name of the invariant a trace module declares, false in its last state exactly
/// when that state has the property's finding.
fn marker_invariant(kind: PropertyKind) -> &'static str {
    match kind {
        PropertyKind::Sometimes => "WitnessNotReached",
        PropertyKind::Safety | PropertyKind::Liveness => "ViolationNotReached",
    }
}

/// The finding in the last state, as a TLA+ state predicate.
fn finding_predicate(kind: PropertyKind, property: &str) -> String {
    match kind {
        PropertyKind::Safety => format!("~{property}"),
        PropertyKind::Liveness => format!("(~ENABLED Next /\\ ~{property}Goal)"),
        PropertyKind::Sometimes => property.to_string(),
    }
}

/// A TLA+ module that replays `trace` against the spec's `Init` and `Next`.
pub fn trace_module(
    entry: &dyn ModelEntry,
    module_name: &str,
    kind: PropertyKind,
    property: &str,
    trace: &[TraceStep],
) -> String {
    assert!(!trace.is_empty(), "a trace has at least its initial state");
    let variables: Vec<&String> = trace[0].state.keys().collect();
    let states: Vec<String> = trace
        .iter()
        .map(|step| {
            let fields: Vec<String> = step
                .state
                .iter()
                .map(|(name, value)| format!("{name} |-> {value}"))
                .collect();
            format!("    [{}]", fields.join(", "))
        })
        .collect();
    let pin = |prime: &str, index: &str| -> String {
        let conjuncts: Vec<String> = variables
            .iter()
            .map(|name| format!("    /\\ {name}{prime} = Trace[{index}].{name}"))
            .collect();
        conjuncts.join("\n")
    };
    let all_variables: Vec<String> = std::iter::once("traceIndex".to_string())
        .chain(variables.iter().map(|v| v.to_string()))
        .collect();
    format!(
        "---- MODULE {module_name} ----\n\
         \\* Replays a stateright trace of `{property}` against {spec}'s Init and Next.\n\
         EXTENDS {spec}, Sequences, Naturals\n\
         VARIABLE traceIndex\n\
         Trace == <<\n{states}\n>>\n\
         TraceInit ==\n    /\\ Init\n    /\\ traceIndex = 1\n{pin_init}\n\
         TraceNext ==\n    /\\ traceIndex < Len(Trace)\n    /\\ Next\n    \
         /\\ traceIndex' = traceIndex + 1\n{pin_next}\n\
         TraceSpec == TraceInit /\\ [][TraceNext]_<<{all}>>\n\
         {marker} == ~(traceIndex = Len(Trace) /\\ {finding})\n\
         ====\n",
        spec = entry.spec_module(),
        states = states.join(",\n"),
        pin_init = pin("", "1"),
        pin_next = pin("'", "traceIndex + 1"),
        all = all_variables.join(", "),
        marker = marker_invariant(kind),
        finding = finding_predicate(kind, property),
    )
}

/// What TLC said about one stateright trace.
#[derive(Debug, Clone, Serialize)]
pub struct TraceConfirmation {
    pub property: &'static str,
    pub kind: PropertyKind,
    pub trace_length: usize,
    /// TLC reached the trace's last state through `Next` and found the property's finding
    /// there.
    pub confirmed: bool,
    /// What TLC reported, for the message when not confirmed.
    pub tlc_said: String,
}

/// Has TLC replay `outcome`'s trace (a violation or a `sometimes` witness).
pub fn confirm_trace(
    entry: &dyn ModelEntry,
    variant: &VariantSpec,
    params: &Params,
    outcome: &PropertyOutcome,
) -> Result<TraceConfirmation, TlcError> {
    let trace = outcome
        .trace
        .as_ref()
        .expect("confirm_trace needs a report with traces");
    let module_name = format!("{}Trace", entry.spec_module());
    let module = trace_module(entry, &module_name, outcome.kind, outcome.name, trace);
    let mut cfg = constants_cfg(entry, variant, params, "TraceSpec");
    cfg.push_str(&format!("INVARIANT {}\n", marker_invariant(outcome.kind)));
    let job = TlcJob {
        files: vec![
            (
                format!("{}.tla", entry.spec_module()),
                entry.spec_source().to_string(),
            ),
            (format!("{module_name}.tla"), module),
            (format!("{module_name}.cfg"), cfg),
        ],
        module_file: format!("{module_name}.tla"),
        cfg_file: format!("{module_name}.cfg"),
        keep_going: false,
        workers: 1,
        quick_start: true,
    };
    let run = tlc::run(&job)?;
    let confirmed = run.verdict == TlcVerdict::SafetyViolation
        && run.violated.as_deref() == Some(marker_invariant(outcome.kind))
        && run.trace.len() == trace.len();
    Ok(TraceConfirmation {
        property: outcome.name,
        kind: outcome.kind,
        trace_length: trace.len(),
        confirmed,
        tlc_said: format!(
            "verdict {:?}, violated {:?}, {} trace states, {} distinct states",
            run.verdict,
            run.violated,
            run.trace.len(),
            run.states_distinct
        ),
    })
}

/// Everything the cross-check of one model variant found.
#[derive(Debug, Clone, Serialize)]
pub struct CrossCheck {
    pub report: CheckReport,
    pub counts: CountComparison,
    pub traces: Vec<TraceConfirmation>,
}

/// The whole cross-check of a model variant at its CI (default) parameters: stateright's
/// report, the count comparison, and TLC's verdict on every trace stateright produced.
pub fn cross_check(model: &str, variant: &str) -> Result<CrossCheck, ModelError> {
    let entry = crate::find_model(model)?;
    let variant = crate::find_variant(entry, Some(variant))?;
    let params = crate::default_params(entry);
    let report = entry.check(variant, &params, &CheckOptions::default());
    let counts = compare_counts(entry, variant, &params)?;
    let mut traces = Vec::new();
    // Counterexamples only: confirming `sometimes` witnesses works the same way
    // (`confirm_trace` accepts them) but costs a JVM start each in every test run.
    for outcome in &report.properties {
        if outcome.status == Status::Violated {
            traces.push(confirm_trace(entry, variant, &params, outcome)?);
        }
    }
    Ok(CrossCheck {
        report,
        counts,
        traces,
    })
}
