//! The dedup upload-race model (`model/src/dedup.rs`) against its pinned facts, and against
//! the real TLC running `specs/Dedup.tla`: both must see the same state space.
//!
//! A change to the model's state space or to the naive counterexample shows up here first;
//! update a pinned figure only after checking that TLC agrees with it.

use model::crosscheck::{confirm_trace, cross_check};
use model::{
    CheckOptions, CheckReport, Finding, ModelEntry, Status, TraceStep, cfg_file_name, cfg_text,
    default_params, find_model, find_variant, resolve_params,
};

fn dedup() -> &'static dyn ModelEntry {
    find_model("dedup").expect("dedup is in the registry")
}

fn check(variant: &str) -> CheckReport {
    let entry = dedup();
    let variant = find_variant(entry, Some(variant)).expect("a dedup variant");
    entry.check(variant, &default_params(entry), &CheckOptions::default())
}

/// A trace one step per line: the action, its spec line, and the variables it changed.
fn render(trace: &[TraceStep]) -> String {
    let mut lines = Vec::new();
    for (index, step) in trace.iter().enumerate() {
        let Some(action) = &step.action else {
            lines.push("Init".to_string());
            continue;
        };
        let previous = &trace[index - 1].state;
        let changed: Vec<String> = step
            .state
            .iter()
            .filter(|(name, value)| previous.get(*name) != Some(value))
            .map(|(name, value)| format!("{name} = {value}"))
            .collect();
        let line = step
            .spec_line
            .map_or("?".to_string(), |line| line.to_string());
        lines.push(format!("{action} [line {line}]: {}", changed.join(", ")));
    }
    lines.join("\n")
}

#[test]
fn unique_state_counts_are_pinned_at_ci_parameters() {
    // (variant, distinct states, states generated); TLC reports the same figures.
    let pinned = [
        ("naive", 82, 177),
        ("optimistic", 770, 2127),
        ("pessimistic", 967, 2455),
    ];
    for (variant, distinct, generated) in pinned {
        let report = check(variant);
        assert_eq!(
            (report.states_distinct, report.states_generated),
            (distinct, generated),
            "dedup {variant}: state space changed"
        );
    }
}

#[test]
fn naive_index_loses_a_chunk_a_committed_manifest_references() {
    let report = check("naive");
    assert_eq!(report.finding(), Finding::SafetyViolation);
    let lost = report
        .outcome("NoCommittedChunkLost")
        .expect("the lost-chunk property");
    assert_eq!(lost.status, Status::Violated);
    // Client 1 is told both chunks are missing, and the naive index lists them at once;
    // client 2 is told they are present and commits; client 1 crashes before uploading and,
    // restarted, is told they are present too. Nothing will ever store chunks 1 and 2.
    let expected = "\
Init
Query(1) [line 72]: index = {1, 2}, pc = <<\"upload\", \"query\">>, pending = <<{1, 2}, {}>>
Query(2) [line 72]: pc = <<\"upload\", \"upload\">>
Commit(2) [line 112]: pc = <<\"upload\", \"done\">>
Crash(1) [line 119]: crashes = 1, pc = <<\"query\", \"done\">>, pending = <<{}, {}>>";
    assert_eq!(render(lost.trace.as_ref().expect("a trace")), expected);

    // The flaw and its first symptom come earlier; the liveness property still holds (every
    // client commits, one of them a manifest that cannot be restored).
    for (property, status, steps) in [
        ("IndexOnlyListsStored", Status::Violated, 2),
        ("CommittedRestorable", Status::Violated, 4),
        ("EveryClientCommits", Status::Holds, 0),
        ("RaceOnFingerprint", Status::Reached, 3),
        ("CrashMidUpload", Status::Reached, 3),
    ] {
        let outcome = report.outcome(property).expect(property);
        assert_eq!(outcome.status, status, "naive {property}");
        let trace_steps = outcome.trace.as_ref().map_or(0, Vec::len);
        assert_eq!(
            trace_steps, steps,
            "naive {property}: trace length (states)"
        );
    }
}

#[test]
fn optimistic_and_pessimistic_hold_and_reach_every_witness() {
    for (variant, witnesses) in [
        (
            "optimistic",
            &["RaceOnFingerprint", "CrashMidUpload", "DuplicateUpload"][..],
        ),
        (
            "pessimistic",
            &[
                "RaceOnFingerprint",
                "CrashMidUpload",
                "WaitOnLease",
                "ReuploadAfterExpiry",
            ][..],
        ),
    ] {
        let report = check(variant);
        assert_eq!(report.finding(), Finding::Holds, "dedup {variant}");
        let reached: Vec<&str> = report
            .properties
            .iter()
            .filter(|outcome| outcome.status == Status::Reached)
            .map(|outcome| outcome.name)
            .collect();
        assert_eq!(reached, witnesses, "dedup {variant}: witnesses reached");
        let holding = report
            .properties
            .iter()
            .filter(|outcome| outcome.status == Status::Holds);
        assert_eq!(
            holding.count(),
            5,
            "dedup {variant}: four safety properties and liveness"
        );
    }
}

#[test]
fn committed_cfg_files_are_what_the_registry_generates() {
    let entry = dedup();
    let specs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("specs");
    for variant in entry.variants() {
        let file = cfg_file_name(entry, variant);
        let committed = std::fs::read_to_string(specs.join(&file)).expect("a committed .cfg");
        assert_eq!(
            committed,
            cfg_text(entry, variant, &default_params(entry)),
            "specs/{file}"
        );
    }
}

#[test]
fn out_of_range_parameters_are_refused_with_the_accepted_range() {
    let error = resolve_params(dedup(), &["clients=9".to_string()])
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("clients") && error.contains("2..=4"),
        "{error}"
    );
    let error = resolve_params(dedup(), &["servers=2".to_string()])
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("servers") && error.contains("crashes (1..=3"),
        "{error}"
    );
}

/// The real TLC, on each variant: the same distinct states and states generated as
/// stateright, and every stateright trace replayed by TLC as a behaviour of the spec's
/// `Next` that ends with the same finding — the counterexamples (through `cross_check`) and
/// the `sometimes` witnesses too, since TLC has no `sometimes` of its own and this is how the
/// spec is shown to reach the race, the crash mid-upload and the lease expiry. A missing TLC
/// fails here with the install command; it never skips.
#[test]
fn tlc_agrees_with_stateright_on_counts_and_every_trace() {
    let entry = dedup();
    for variant_name in ["naive", "optimistic", "pessimistic"] {
        let cross = cross_check("dedup", variant_name).unwrap_or_else(|error| panic!("{error}"));
        assert!(
            cross.counts.agree(),
            "dedup {variant_name}: {:?}",
            cross.counts
        );
        let variant = find_variant(entry, Some(variant_name)).expect("a dedup variant");
        let mut confirmed = Vec::new();
        for outcome in &cross.report.properties {
            let trace = match outcome.status {
                Status::Violated => cross.traces.iter().find(|t| t.property == outcome.name),
                Status::Reached => None,
                Status::Holds | Status::NeverReached => continue,
            };
            let trace = match trace {
                Some(trace) => trace.clone(),
                None => confirm_trace(entry, variant, &default_params(entry), outcome)
                    .unwrap_or_else(|error| panic!("TLC on {}: {error}", outcome.name)),
            };
            assert!(
                trace.confirmed,
                "dedup {variant_name} {}: TLC said {}",
                trace.property, trace.tlc_said
            );
            confirmed.push(trace.property);
        }
        let expected: &[&str] = match variant_name {
            "naive" => &[
                "IndexOnlyListsStored",
                "CommittedRestorable",
                "NoCommittedChunkLost",
                "RaceOnFingerprint",
                "CrashMidUpload",
            ],
            "optimistic" => &["RaceOnFingerprint", "CrashMidUpload", "DuplicateUpload"],
            _ => &[
                "RaceOnFingerprint",
                "CrashMidUpload",
                "WaitOnLease",
                "ReuploadAfterExpiry",
            ],
        };
        assert_eq!(
            confirmed, expected,
            "dedup {variant_name}: traces TLC confirmed"
        );
    }
}
