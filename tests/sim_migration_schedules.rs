//! Model → code: every counterexample the model checker finds for the naive migration,
//! replayed step by step against the real store code in the simulator.
//!
//! For each of the model's naive safety properties, the checker's shortest path is turned
//! action by action into a [`Step`] schedule (`WriteX` → a write to X whose second half
//! the driver holds; `DeliverY` → delivering exactly that held write or backfill copy;
//! `CrashWriter` → dropping it; `Backfill` → reading the key from X). The real naive code
//! must then fail with the failure the property names, and the real fixed code must
//! survive the very same schedule.

use model::migration::{Action, Migration, Variant as ModelVariant};
use sim::migration::cluster::key_name;
use sim::migration::oracles;
use sim::migration::schedule::{Step, run_schedule};
use stateright::{Checker, Model};

/// The model's shortest naive path to a violation of `property`.
fn counterexample(property: &'static str) -> Vec<Action> {
    let model = Migration {
        variant: ModelVariant::Naive,
        writers: 2,
        keys: 1,
        values: 2,
    };
    let checker = model.checker().spawn_bfs().join();
    let path = checker
        .discovery(property)
        .unwrap_or_else(|| panic!("the model checker found no naive violation of {property}"));
    path.into_actions()
}

/// The model's actions as simulator steps; phase changes touch no data and are skipped.
fn schedule_of(actions: &[Action]) -> Vec<Step> {
    let key = |key: u8| key_name(usize::from(key) - 1);
    actions
        .iter()
        .filter_map(|action| match *action {
            Action::WriteX {
                writer,
                key: k,
                val,
            } => Some(Step::WriteX {
                writer,
                key: key(k),
                value: Some(val),
            }),
            Action::DeleteX { writer, key: k } => Some(Step::WriteX {
                writer,
                key: key(k),
                value: None,
            }),
            Action::DeliverY { src: 0, key: k } => Some(Step::DeliverBackfill { key: key(k) }),
            Action::DeliverY { src, .. } => Some(Step::DeliverWrite { writer: src }),
            Action::CrashWriter { writer } => Some(Step::CrashWriter { writer }),
            Action::Backfill { key: k } => Some(Step::Backfill { key: key(k) }),
            Action::Verify => Some(Step::Verify),
            // Sending is the driver holding the write until its `DeliverY`.
            Action::WriteY { .. } | Action::DeleteY { .. } => None,
            Action::SwitchReads | Action::StopWritingX | Action::Finish => None,
        })
        .collect()
}

fn assert_model_failure_reproduces(property: &'static str, kind: &str) {
    let actions = counterexample(property);
    let steps = schedule_of(&actions);
    println!(
        "{property}: {} model actions -> {} steps",
        actions.len(),
        steps.len()
    );
    for step in &steps {
        println!("  {step:?}");
    }
    assert!(!steps.is_empty());
    let keys = vec![key_name(0)];
    let naive = run_schedule(migration::Variant::Naive, &keys, &steps);
    let kinds: Vec<&str> = naive.violations.iter().map(|v| v.oracle.as_str()).collect();
    assert!(
        kinds.contains(&kind),
        "naive under the {property} counterexample: expected {kind:?}, found {:?}\n{}",
        naive.violations,
        naive
            .events
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    );
    let fixed = run_schedule(migration::Variant::Fixed, &keys, &steps);
    assert!(
        fixed.violations.is_empty(),
        "fixed failed the {property} schedule: {:?}",
        fixed.violations
    );
}

/// Two dual writes to one key reach Y in the other order than X applied them.
#[test]
fn order_race_counterexample_fails_naive_and_not_fixed() {
    assert_model_failure_reproduces("DualWritesConverge", oracles::ORDER_RACE);
}

/// A backfill copy read before a dual write lands in Y after it.
#[test]
fn backfill_overwrite_counterexample_fails_naive_and_not_fixed() {
    assert_model_failure_reproduces("BackfillKeepsNewer", oracles::BACKFILL_OVERWRITE);
}

/// A key deleted in X comes back in Y.
#[test]
fn resurrected_delete_counterexample_fails_naive_and_not_fixed() {
    assert_model_failure_reproduces("DeletedStaysDeleted", oracles::RESURRECTED_DELETE);
}

/// A writer stops between X and Y, and nothing repairs Y.
#[test]
fn crash_between_writes_counterexample_fails_naive_and_not_fixed() {
    assert_model_failure_reproduces("CrashRepaired", oracles::CRASH_BETWEEN_WRITES);
}
