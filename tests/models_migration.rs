//! The migration model's pinned facts: the shortest counterexample of every property the
//! naive design breaks (one step per line), the races both designs must reach, the
//! committed `.cfg` files, and the command line's answers to good and bad input.
//!
//! A changed path here means the model changed; check the new path against TLC
//! (`crosscheck check migration --variant naive`) before updating the pin.

use std::process::Command;

use model::{
    CheckOptions, CheckReport, Finding, ModelEntry, Status, TraceStep, cfg_file_name, cfg_text,
    default_params, find_model, find_variant, spec_line,
};

fn migration() -> &'static dyn ModelEntry {
    find_model("migration").expect("migration is in the registry")
}

fn check(variant: &str) -> CheckReport {
    let entry = migration();
    let variant = find_variant(entry, Some(variant)).unwrap();
    entry.check(variant, &default_params(entry), &CheckOptions::default())
}

/// One action per line, then the stores at the end.
fn render(trace: &[TraceStep]) -> String {
    let mut lines: Vec<String> = trace
        .iter()
        .map(|step| {
            step.action
                .as_ref()
                .map_or("Init".to_string(), ToString::to_string)
        })
        .collect();
    let last = &trace.last().unwrap().state;
    lines.push(format!("=> x = {}, y = {}", last["x"], last["y"]));
    lines.join("\n")
}

fn path_of(report: &CheckReport, property: &str) -> String {
    let outcome = report.outcome(property).unwrap();
    assert_eq!(outcome.status, Status::Violated, "{property}");
    render(outcome.trace.as_ref().unwrap())
}

#[test]
fn naive_order_race_two_writers_reach_y_in_the_other_order() {
    let expected = "\
Init
WriteX(1, 1, 1)
WriteY(1)
WriteX(2, 1, 2)
WriteY(2)
DeliverY(2, 1)
DeliverY(1, 1)
=> x = <<[val |-> 2, ver |-> 3]>>, y = <<[val |-> 1, ver |-> 2]>>";
    assert_eq!(path_of(&check("naive"), "DualWritesConverge"), expected);
}

#[test]
fn naive_backfill_copy_lands_over_a_newer_dual_write() {
    let expected = "\
Init
Backfill(1)
WriteX(1, 1, 2)
WriteY(1)
DeliverY(1, 1)
DeliverY(0, 1)
=> x = <<[val |-> 2, ver |-> 2]>>, y = <<[val |-> 1, ver |-> 1]>>";
    assert_eq!(path_of(&check("naive"), "BackfillKeepsNewer"), expected);
}

#[test]
fn naive_stale_backfill_copy_brings_a_deleted_key_back() {
    let expected = "\
Init
Backfill(1)
DeleteX(1, 1)
DeleteY(1)
DeliverY(1, 1)
DeliverY(0, 1)
=> x = <<[val |-> 0, ver |-> 0]>>, y = <<[val |-> 1, ver |-> 1]>>";
    assert_eq!(path_of(&check("naive"), "DeletedStaysDeleted"), expected);
}

#[test]
fn naive_crash_between_the_writes_leaves_y_behind_and_verify_waits_forever() {
    let expected = "\
Init
DeleteX(1, 1)
CrashWriter(1)
Backfill(1)
WriteX(2, 1, 1)
CrashWriter(2)
=> x = <<[val |-> 1, ver |-> 1]>>, y = <<[val |-> 0, ver |-> 0]>>";
    let report = check("naive");
    assert_eq!(path_of(&report, "CrashRepaired"), expected);
    // The same stall is the liveness violation: verify waits for X == Y, which never comes.
    assert_eq!(path_of(&report, "Completes"), expected);
    let last = report
        .outcome("Completes")
        .unwrap()
        .trace
        .as_ref()
        .unwrap()
        .last()
        .unwrap();
    assert_eq!(last.state["phase"].to_string(), "\"Verify\"");
}

#[test]
fn both_variants_reach_every_race_and_only_naive_is_caught() {
    let naive = check("naive");
    let fixed = check("fixed");
    assert_eq!(naive.finding(), Finding::SafetyViolation);
    assert_eq!(fixed.finding(), Finding::Holds);
    assert_eq!((naive.states_distinct, fixed.states_distinct), (2148, 2190));
    for report in [&naive, &fixed] {
        for name in [
            "TwoWritersRaceOneKey",
            "BackfillRacesWrite",
            "CrashMidDualWrite",
        ] {
            let outcome = report.outcome(name).unwrap();
            assert_eq!(
                outcome.status,
                Status::Reached,
                "{} never reaches {name}",
                report.variant
            );
            assert_eq!(
                outcome.trace.as_ref().unwrap().len(),
                3,
                "{name} needs two steps"
            );
        }
    }
    for outcome in fixed.properties.iter().filter(|o| o.trace.is_none()) {
        assert_eq!(outcome.status, Status::Holds, "{}", outcome.name);
    }
}

#[test]
fn committed_cfg_files_are_what_the_registry_generates() {
    let entry = migration();
    let specs = concat!(env!("CARGO_MANIFEST_DIR"), "/specs");
    for variant in entry.variants() {
        let path = format!("{specs}/{}", cfg_file_name(entry, variant));
        let committed = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(
            committed,
            cfg_text(entry, variant, &default_params(entry)),
            "{path}"
        );
    }
}

#[test]
fn every_action_in_a_trace_points_at_its_definition_in_the_spec() {
    let source = migration().spec_source();
    let report = check("naive");
    for outcome in report.properties.iter().filter(|o| o.trace.is_some()) {
        for step in outcome.trace.as_ref().unwrap().iter().skip(1) {
            let action = step.action.as_ref().unwrap();
            let line = step
                .spec_line
                .unwrap_or_else(|| panic!("{} has no line", action.name));
            let text = source.lines().nth(line - 1).unwrap();
            assert!(text.starts_with(action.name), "line {line} is `{text}`");
        }
    }
    for action in ["Verify", "SwitchReads", "StopWritingX", "Finish"] {
        assert!(
            spec_line(source, action).is_some(),
            "{action} is not defined in the spec"
        );
    }
}

fn crosscheck(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_crosscheck"))
        .args(args)
        .output()
        .unwrap();
    let text = |bytes: Vec<u8>| String::from_utf8_lossy(&bytes).into_owned();
    (
        output.status.code().unwrap_or(-1),
        text(output.stdout),
        text(output.stderr),
    )
}

#[test]
fn check_exits_by_finding_and_prints_each_step_with_its_spec_line() {
    let (code, stdout, _) = crosscheck(&["check", "migration", "--variant", "naive", "--no-tlc"]);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("VIOLATED in 6 steps"), "{stdout}");
    assert!(stdout.contains("DeliverY(0, 1)"));
    assert!(stdout.contains("Migration.tla:"), "{stdout}");
    let (code, stdout, _) = crosscheck(&["check", "migration", "--variant", "fixed", "--no-tlc"]);
    assert_eq!(code, 0, "{stdout}");
}

#[test]
fn bad_input_exits_2_and_lists_what_is_accepted() {
    let cases: &[(&[&str], &str)] = &[
        (&["check", "migraton"], "expected one of: migration"),
        (
            &["check", "migration", "--variant", "smart"],
            "expected one of: naive, fixed",
        ),
        (
            &["check", "migration", "--param", "readers=2"],
            "writers (1..=4, default 2)",
        ),
        (
            &["check", "migration", "--param", "writers=9"],
            "1..=4; found `9`",
        ),
        (&["check", "migration", "--param", "writers"], "NAME=VALUE"),
        (
            &["tlc", "migration", "--variant", "smart"],
            "expected one of: naive, fixed",
        ),
    ];
    for (args, message) in cases {
        let (code, _, stderr) = crosscheck(args);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(
            stderr.contains(message),
            "{args:?}: `{stderr}` lacks `{message}`"
        );
    }
}

#[test]
fn a_missing_tlc_is_an_environment_error_naming_the_install_command() {
    let output = Command::new(env!("CARGO_BIN_EXE_crosscheck"))
        .args(["tlc", "migration", "--variant", "fixed"])
        .env("CROSSCHECK_TLA2TOOLS", "/nonexistent/tla2tools.jar")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("scripts/setup") && stderr.contains("/nonexistent"),
        "{stderr}"
    );
}
