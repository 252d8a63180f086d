//! Runs stateright on a [`TlaModel`] to completion and turns what it finds into a
//! [`CheckReport`] of TLA+ traces.
//!
//! The one idea: the run never stops early, so the counts are those of the whole state
//! space (comparable with TLC's `-continue` run), and each property's trace is the FIRST
//! state in BFS order that has it, so it is a shortest one. stateright's own discovery map
//! cannot give that on a full run: it keeps overwriting a property's path with every later
//! state that violates it. A visitor sees states in BFS order and keeps the first.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use stateright::{Checker, CheckerVisitor, Expectation, HasDiscoveries, Model, Path};

use crate::{
    CheckOptions, CheckReport, ModelError, Params, PropertyKind, PropertyOutcome, Status, TlaModel,
    TraceStep, VariantSpec,
};

/// A property name no model has, so `finish_when` never matches and BFS runs to the end.
const NEVER_A_PROPERTY: &str = "(run to completion)";

/// The first path that reached each property, kept by the visitor.
type FirstPaths<S, A> = Arc<Mutex<HashMap<&'static str, Path<S, A>>>>;

/// Checks `model` to completion and reports every property with its shortest trace.
pub fn run<M>(
    model: M,
    model_name: &'static str,
    variant: &VariantSpec,
    params: &Params,
    spec_source: &str,
    options: &CheckOptions,
) -> CheckReport
where
    M: TlaModel + Send + Sync + 'static,
    M::State: Clone + Debug + Hash + PartialEq + Send + Sync,
    M::Action: Clone + Debug + PartialEq + Send + Sync,
{
    assert!(options.threads >= 1, "a checker needs at least one thread");
    let specs = model.property_specs();
    let properties = model.properties();
    assert_eq!(
        specs.len(),
        properties.len(),
        "property_specs() must describe properties()"
    );
    for (spec, property) in specs.iter().zip(&properties) {
        assert_eq!(spec.name, property.name, "property_specs() out of order");
    }
    let first_paths: FirstPaths<M::State, M::Action> = Arc::default();
    let recorder = Arc::clone(&first_paths);
    let finish_when = if options.stop_at_first_violation {
        HasDiscoveries::AnyFailures
    } else {
        HasDiscoveries::AllOf(BTreeSet::from([NEVER_A_PROPERTY]))
    };
    let mut builder = model
        .checker()
        .threads(options.threads)
        .finish_when(finish_when);
    if options.traces {
        builder = builder.visitor(FirstPathRecorder(recorder));
    }
    let started = Instant::now();
    let checker = builder.spawn_bfs().join();
    let elapsed_seconds = started.elapsed().as_secs_f64();
    let discovered = checker.discoveries();
    let model = checker.model();
    let mut first_paths = first_paths.lock().expect("visitor panicked");
    let outcomes = specs
        .iter()
        .map(|spec| {
            let status = status_of(spec.kind, discovered.contains_key(spec.name));
            let trace = first_paths
                .remove(spec.name)
                .map(|path| render_path(model, spec_source, path));
            if options.traces && !options.stop_at_first_violation {
                assert_eq!(
                    trace.is_some(),
                    discovered.contains_key(spec.name),
                    "the visitor and stateright disagree on `{}`",
                    spec.name
                );
            }
            PropertyOutcome {
                name: spec.name,
                kind: spec.kind,
                about: spec.about,
                status,
                trace,
            }
        })
        .collect();
    CheckReport {
        model: model_name,
        variant: variant.name,
        params: params.clone(),
        threads: options.threads,
        states_distinct: checker.unique_state_count(),
        states_generated: checker.state_count(),
        depth_max: checker.max_depth(),
        elapsed_seconds,
        properties: outcomes,
    }
}

fn status_of(kind: PropertyKind, discovered: bool) -> Status {
    match (kind, discovered) {
        (PropertyKind::Sometimes, true) => Status::Reached,
        (PropertyKind::Sometimes, false) => Status::NeverReached,
        (_, true) => Status::Violated,
        (_, false) => Status::Holds,
    }
}

/// The visitor that feeds [`record_first`].
struct FirstPathRecorder<S, A>(FirstPaths<S, A>);

impl<M: Model> CheckerVisitor<M> for FirstPathRecorder<M::State, M::Action>
where
    M::State: Clone,
    M::Action: Clone,
{
    fn visit(&self, model: &M, path: Path<M::State, M::Action>) {
        record_first(model, &self.0, path);
    }
}

/// Keeps `path` for every property its last state has (violates, or reaches for
/// `sometimes`) unless an earlier, hence no longer, path was kept.
fn record_first<M: Model>(
    model: &M,
    first_paths: &FirstPaths<M::State, M::Action>,
    path: Path<M::State, M::Action>,
) where
    M::State: Clone,
    M::Action: Clone,
{
    let state = path.last_state();
    let mut hits = Vec::new();
    for property in model.properties() {
        let holds = (property.condition)(model, state);
        let hit = match property.expectation {
            Expectation::Always => !holds,
            Expectation::Sometimes => holds,
            Expectation::Eventually => {
                panic!(
                    "`{}`: use an always over terminal states, not eventually",
                    property.name
                )
            }
        };
        if hit {
            hits.push(property.name);
        }
    }
    if hits.is_empty() {
        return;
    }
    let mut first_paths = first_paths.lock().expect("visitor panicked");
    for name in hits {
        first_paths.entry(name).or_insert_with(|| path.clone());
    }
}

/// A stateright path as TLA+ steps, each with the spec line of its action.
pub fn render_path<M: TlaModel>(
    model: &M,
    spec_source: &str,
    path: Path<M::State, M::Action>,
) -> Vec<TraceStep> {
    let mut steps = Vec::new();
    let mut previous_action: Option<M::Action> = None;
    for (state, action) in path.into_vec() {
        let tla_action = previous_action
            .as_ref()
            .map(|action| model.tla_action(action));
        let spec_line = tla_action
            .as_ref()
            .and_then(|action| crate::spec_line(spec_source, action.name));
        steps.push(TraceStep {
            action: tla_action,
            spec_line,
            state: tla_state(model, &state),
        });
        previous_action = action;
    }
    steps
}

/// A state as canonical TLA+ variables.
pub fn tla_state<M: TlaModel>(model: &M, state: &M::State) -> crate::TlaState {
    model
        .tla_state(state)
        .into_iter()
        .map(|(name, value)| (name.to_string(), value.canonical()))
        .collect()
}

/// Serves the stateright Explorer for `model` on `address`, calls `ready` with the address
/// once it is known to be free, then serves until the process ends (stateright's server
/// never returns).
pub fn serve<M>(model: M, address: &str, ready: &dyn Fn(&str)) -> Result<(), ModelError>
where
    M: Model + Send + Sync + 'static,
    M::State: Clone + Debug + Hash + PartialEq + Send + Sync,
    M::Action: Clone + Debug + PartialEq + Send + Sync,
{
    // The Explorer binds inside a thread and panics there on failure; bind once here
    // first so a busy or bad address is reported as an error instead.
    std::net::TcpListener::bind(address).map_err(|error| ModelError::Explore {
        address: address.to_string(),
        reason: error.to_string(),
    })?;
    ready(address);
    let _checker = model.checker().serve(address);
    Ok(())
}
