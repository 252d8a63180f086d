//! The model's counterexamples, replayed against the real code.
//!
//! stateright explores the naive migration model (`model::migration`, 2 writers, 1 key, 2
//! values: the defaults TLC checks too) and finds one counterexample per property. Each is
//! turned into a schedule of the same actions and replayed with the real writer, backfill
//! and verify on real stores ([`migration::schedule::Replay`]): the real naive code must
//! break the same property, and the real fixed code must survive the same schedule and
//! finish with Y equal to X. This is what ties the model to the code.

use std::collections::BTreeSet;

use migration::schedule::{Action, Property, Replay};
use migration::store::Store;
use migration::{Phase, Variant};
use model::migration::{Action as ModelAction, Migration, Variant as ModelVariant};
use stateright::{Checker, HasDiscoveries, Model};

const WRITERS: u8 = 2;
const KEYS: u8 = 1;

fn schedule_of(actions: Vec<ModelAction>) -> Vec<Action> {
    actions
        .into_iter()
        .map(|action| match action {
            ModelAction::WriteX { writer, key, val } => Action::WriteX { writer, key, val },
            ModelAction::DeleteX { writer, key } => Action::DeleteX { writer, key },
            ModelAction::WriteY { writer } => Action::WriteY { writer },
            ModelAction::DeleteY { writer } => Action::DeleteY { writer },
            ModelAction::DeliverY { src, key } => Action::DeliverY { src, key },
            ModelAction::CrashWriter { writer } => Action::CrashWriter { writer },
            ModelAction::Backfill { key } => Action::Backfill { key },
            ModelAction::Verify => Action::Verify,
            ModelAction::SwitchReads => Action::SwitchReads,
            ModelAction::StopWritingX => Action::StopWritingX,
            ModelAction::Finish => Action::Finish,
        })
        .collect()
}

/// One counterexample schedule per property the naive model violates.
fn naive_counterexamples() -> Vec<(Property, Vec<Action>)> {
    let model = Migration {
        variant: ModelVariant::Naive,
        writers: WRITERS,
        keys: KEYS,
        values: 2,
    };
    let names: BTreeSet<&'static str> = Property::ALL
        .iter()
        .map(|property| property.name())
        .collect();
    let checker = model
        .checker()
        .finish_when(HasDiscoveries::AllOf(names))
        .spawn_bfs()
        .join();
    Property::ALL
        .iter()
        .map(|property| {
            let path = checker.discovery(property.name()).unwrap_or_else(|| {
                panic!("the naive model no longer violates {}", property.name())
            });
            (*property, schedule_of(path.into_actions()))
        })
        .collect()
}

fn print_schedule(property: Property, schedule: &[Action]) -> String {
    let steps: Vec<String> = schedule
        .iter()
        .map(|action| format!("  {action:?}"))
        .collect();
    format!("{} counterexample:\n{}", property.name(), steps.join("\n"))
}

#[test]
fn every_naive_model_counterexample_breaks_the_real_naive_code_the_same_way() {
    for (property, schedule) in naive_counterexamples() {
        let mut replay = Replay::new(Variant::Naive, WRITERS, KEYS).unwrap();
        let violated = replay.run(&schedule).unwrap_or_else(|error| {
            panic!(
                "{}\ndoes not fit the real code: {error}",
                print_schedule(property, &schedule)
            )
        });
        assert!(
            violated.contains(&property),
            "{}\nthe real naive code broke {violated:?}, not {}",
            print_schedule(property, &schedule),
            property.name()
        );
    }
}

#[test]
fn the_real_fixed_code_survives_every_naive_counterexample() {
    for (property, schedule) in naive_counterexamples() {
        let mut replay = Replay::new(Variant::Fixed, WRITERS, KEYS).unwrap();
        let mut violated = Vec::new();
        for (step, action) in schedule.iter().enumerate() {
            // Fixed verify repairs before reads switch; naive schedules never ask it to.
            if *action == Action::SwitchReads && replay.phase == Phase::Verify {
                replay.apply(step, &Action::Verify).ok();
            }
            replay.apply(step, action).unwrap_or_else(|error| {
                panic!(
                    "{}\nrefused by fixed: {error}",
                    print_schedule(property, &schedule)
                )
            });
            violated.extend(replay.violations().unwrap());
        }
        violated.extend(replay.finish().unwrap());
        assert!(
            violated.is_empty(),
            "{}\nfixed broke {violated:?}",
            print_schedule(property, &schedule)
        );
        assert_eq!(
            replay.phase,
            Phase::Done,
            "{}",
            print_schedule(property, &schedule)
        );
        assert_eq!(
            replay.x.get("key-1").unwrap(),
            replay.y.get("key-1").unwrap()
        );
    }
}

/// The replay checks the schedule against the real state: an action the real code cannot
/// take is refused with its step, not silently skipped.
#[test]
fn a_schedule_that_does_not_fit_is_refused() {
    let mut replay = Replay::new(Variant::Fixed, WRITERS, KEYS).unwrap();
    let schedule = [
        Action::WriteX {
            writer: 1,
            key: 1,
            val: 2,
        },
        Action::DeliverY { src: 1, key: 1 },
    ];
    let error = replay.run(&schedule).unwrap_err().to_string();
    assert!(
        error.contains("step 1") && error.contains("nothing from 1"),
        "{error}"
    );
}
