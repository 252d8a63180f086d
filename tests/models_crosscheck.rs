//! The migration model against the real TLC on `specs/Migration.tla`: for each variant at
//! its CI parameters both tools run to completion and must count the same states, and
//! TLC must accept every stateright counterexample as a behaviour of the spec's `Next`
//! that violates the same property. A missing TLC fails these tests with the install
//! command; it never skips them.
//!
//! The machinery is `model::crosscheck`; the dedup model's tests call the same
//! `cross_check(model, variant)`.

use model::crosscheck::{self, cross_check};
use model::tlc::TlcVerdict;
use model::{CheckOptions, PropertyKind, Status, default_params, find_model, find_variant};

/// Pinned: (variant, distinct states, states generated) at writers=2 keys=1 values=2.
/// A change here is a change to the state space; update it only with TLC agreeing.
const PINNED_COUNTS: &[(&str, u64, u64)] = &[("naive", 2148, 4266), ("fixed", 2190, 4854)];

#[test]
fn naive_counts_match_tlc_and_tlc_confirms_every_counterexample() {
    let result = cross_check("migration", "naive").unwrap_or_else(|error| panic!("{error}"));
    let counts = &result.counts;
    assert!(counts.agree(), "stateright and TLC disagree: {counts:?}");
    assert_eq!(
        (counts.stateright_distinct, counts.stateright_generated),
        (2148, 4266)
    );
    let violated: Vec<&str> = result.traces.iter().map(|trace| trace.property).collect();
    assert_eq!(
        violated,
        [
            "DualWritesConverge",
            "BackfillKeepsNewer",
            "DeletedStaysDeleted",
            "CrashRepaired",
            "Completes"
        ]
    );
    for trace in &result.traces {
        assert!(
            trace.confirmed,
            "TLC rejected the `{}` trace: {}",
            trace.property, trace.tlc_said
        );
    }
}

#[test]
fn fixed_counts_match_tlc_and_nothing_is_violated() {
    let result = cross_check("migration", "fixed").unwrap_or_else(|error| panic!("{error}"));
    assert!(
        result.counts.agree(),
        "stateright and TLC disagree: {:?}",
        result.counts
    );
    let pinned = PINNED_COUNTS
        .iter()
        .find(|(variant, ..)| *variant == "fixed")
        .unwrap();
    assert_eq!(
        (result.counts.tlc_distinct, result.counts.tlc_generated),
        (pinned.1, pinned.2)
    );
    assert!(
        result.traces.is_empty(),
        "fixed produced counterexamples: {:?}",
        result.traces
    );
}

/// TLC alone, with its own properties (liveness included): naive is caught, and TLC's own
/// shortest trace is as long as stateright's for the property it names; fixed holds.
#[test]
fn tlc_alone_reaches_the_same_verdicts_with_traces_of_the_same_length() {
    let entry = find_model("migration").unwrap();
    let params = default_params(entry);
    let naive = find_variant(entry, Some("naive")).unwrap();
    let run = crosscheck::run_tlc(entry, naive, &params).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(run.verdict, TlcVerdict::SafetyViolation);
    assert_eq!(run.exit_code, 12);
    let named = run
        .violated
        .clone()
        .expect("TLC names the violated invariant");
    let report = entry.check(naive, &params, &CheckOptions::default());
    let outcome = report
        .outcome(&named)
        .expect("TLC names a property the model has");
    assert_eq!(outcome.status, Status::Violated);
    assert_eq!(
        run.trace.len(),
        outcome.trace.as_ref().unwrap().len(),
        "both tools search breadth-first, so their shortest traces are equally long"
    );
    assert_eq!(run.trace[0].state, outcome.trace.as_ref().unwrap()[0].state);

    let fixed = find_variant(entry, Some("fixed")).unwrap();
    let run = crosscheck::run_tlc(entry, fixed, &params).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(run.verdict, TlcVerdict::Holds, "TLC: {run:?}");
    assert_eq!(run.states_distinct, 2190);
}

/// The confirmation must be able to fail: a counterexample with a step cut out is not a
/// behaviour of the spec, and TLC must say so.
#[test]
fn tlc_rejects_a_counterexample_with_a_missing_step() {
    let entry = find_model("migration").unwrap();
    let params = default_params(entry);
    let naive = find_variant(entry, Some("naive")).unwrap();
    let report = entry.check(naive, &params, &CheckOptions::default());
    let mut outcome = report.outcome("BackfillKeepsNewer").unwrap().clone();
    assert_eq!(outcome.kind, PropertyKind::Safety);
    let trace = outcome.trace.as_mut().unwrap();
    trace.remove(2);
    let verdict = crosscheck::confirm_trace(entry, naive, &params, &outcome)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        !verdict.confirmed,
        "TLC accepted a broken trace: {}",
        verdict.tlc_said
    );
}

/// The spec writes "no step left" out by hand (`NoStepLeft`) because `~ENABLED Next` doubles
/// TLC's work per state; TLC checks here that the two never differ.
#[test]
fn the_specs_hand_written_no_step_left_is_exactly_not_enabled_next() {
    let entry = find_model("migration").unwrap();
    let params = default_params(entry);
    for variant in entry.variants() {
        let run =
            crosscheck::run_tlc_with_invariants(entry, variant, &params, &["NoStepLeftIsExact"])
                .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(run.verdict, TlcVerdict::Holds, "{}: {run:?}", variant.name);
        assert!(run.states_distinct > 2000, "{}: {run:?}", variant.name);
    }
}
