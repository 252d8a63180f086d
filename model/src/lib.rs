//! Stateright models of the crosscheck designs, their TLA+ twins under `specs/`, and the TLC
//! runner that cross-checks one against the other.
//!
//! The one idea to hold: **a model and its spec are the same state machine written twice.**
//! The Rust state is laid out exactly like the TLA+ variables (functions over `1..N` become
//! `Vec`s, records become structs), every action carries the spec's action name, and every
//! property carries the name of the spec's invariant or temporal formula. That is what lets
//! the tests demand equal state counts from stateright and TLC, and lets TLC replay a
//! stateright counterexample against the spec's `Next`.
//!
//! # Plugging a model in
//!
//! 1. Write the stateright model (`impl stateright::Model`) and implement [`TlaModel`] for it:
//!    how a state reads as TLA+ variables, how an action reads as a TLA+ action, and which
//!    [`PropertyKind`] each of its properties is. Liveness is checked as an `always` over
//!    terminal states on an acyclic state graph (stateright's `eventually` is unsound on
//!    joins); say in the model's doc why its graph is acyclic.
//! 2. Write `specs/<Module>.tla` with the same variables, action names and property names,
//!    a `Spec` formula, and `INVARIANT`-able definitions for the safety properties.
//! 3. Implement [`ModelEntry`] (variants, parameters with defaults and ranges, the spec's
//!    source, the TLC constants for given parameters, and `check`/`explore`, which usually
//!    just build the model and call [`check::run`] / [`check::serve`]).
//! 4. Add one line to [`registry`]. The CLI (`check`, `tlc`, `explore`, `bench models`,
//!    `verify`) and the cross-check tests (`crosscheck::cross_check`) then cover it.
//!
//! Committed `.cfg` files (one per variant, at the CI parameters = the defaults) are what
//! [`cfg_text`] generates; a test keeps them equal.

pub mod bench;
pub mod check;
pub mod crosscheck;
pub mod dedup;
pub mod migration;
pub mod tla;
pub mod tlc;

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

pub use tla::TlaValue;

/// Every model the command line knows, in the order `verify` reports them.
pub fn registry() -> Vec<&'static dyn ModelEntry> {
    vec![&migration::MIGRATION, &dedup::DEDUP]
}

/// What kind of claim a property makes, which decides what a discovery means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PropertyKind {
    /// Holds in every reachable state; a discovery is a counterexample (exit 1).
    Safety,
    /// Something good happens on every behaviour; a discovery is a behaviour that stalls
    /// (exit 3). Checked by stateright as an `always` over terminal states.
    Liveness,
    /// Some reachable state satisfies it; a discovery is the witness that the interesting
    /// case was reached. Not finding one means the model is too weak to test anything.
    Sometimes,
}

/// A property as the registry describes it; the name is also the TLA+ definition's name.
#[derive(Debug, Clone, Copy)]
pub struct PropertySpec {
    pub name: &'static str,
    pub kind: PropertyKind,
    /// One sentence saying what must (or must be able to) happen.
    pub about: &'static str,
}

/// One variant of a model's design.
#[derive(Debug, Clone, Copy)]
pub struct VariantSpec {
    pub name: &'static str,
    pub about: &'static str,
    /// `true` when the variant is meant to be caught: `verify` passes it when the checker
    /// finds a violation, and fails it when everything holds.
    pub expect_violation: bool,
}

/// A numeric model parameter with its default (also the CI value) and its inclusive range.
#[derive(Debug, Clone, Copy)]
pub struct ParamSpec {
    pub name: &'static str,
    pub about: &'static str,
    pub default: u64,
    pub min: u64,
    pub max: u64,
}

/// Validated parameter values, one per [`ParamSpec`] of the model, in its order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Params(pub Vec<(&'static str, u64)>);

impl Params {
    /// The value of a parameter the model declared. Asking for an undeclared one is a bug
    /// in the model, not bad input, so it panics.
    pub fn get(&self, name: &str) -> u64 {
        match self.0.iter().find(|(param, _)| *param == name) {
            Some((_, value)) => *value,
            None => panic!("model asked for parameter `{name}` it never declared"),
        }
    }
}

impl fmt::Display for Params {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pairs: Vec<String> = self
            .0
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect();
        write!(formatter, "{}", pairs.join(" "))
    }
}

/// Bad input or a broken environment. Each message says what was expected, what was found,
/// and what to do.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("unknown model `{found}`; expected one of: {accepted}")]
    UnknownModel { found: String, accepted: String },
    #[error("model `{model}` has no variant `{found}`; expected one of: {accepted}")]
    UnknownVariant {
        model: String,
        found: String,
        accepted: String,
    },
    #[error("model `{model}` has no parameter `{found}`; expected one of: {accepted}")]
    UnknownParam {
        model: String,
        found: String,
        accepted: String,
    },
    #[error(
        "parameter `{param}` must be NAME=VALUE with VALUE a whole number in \
             {min}..={max}; found `{found}`"
    )]
    BadParamValue {
        param: String,
        found: String,
        min: u64,
        max: u64,
    },
    #[error("parameter `{found}` must be written NAME=VALUE, e.g. `writers=2`")]
    BadParamSyntax { found: String },
    #[error(transparent)]
    Tlc(#[from] tlc::TlcError),
    #[error("could not serve the stateright Explorer on `{address}`: {reason}")]
    Explore { address: String, reason: String },
}

/// One registered model: everything the CLI and the cross-checks need, without knowing the
/// model's Rust types (those stay behind [`ModelEntry::check`] and [`ModelEntry::explore`]).
pub trait ModelEntry: Sync {
    /// The name on the command line, e.g. `migration`.
    fn name(&self) -> &'static str;
    fn about(&self) -> &'static str;
    /// The first variant is the default.
    fn variants(&self) -> &'static [VariantSpec];
    fn params(&self) -> &'static [ParamSpec];
    /// The same for every variant, in the order the model's `properties()` lists them.
    fn properties(&self) -> &'static [PropertySpec];
    /// The TLA+ module name, e.g. `Migration` for `specs/Migration.tla`.
    fn spec_module(&self) -> &'static str;
    /// The spec's text (`include_str!`), so the binary never depends on its working dir.
    fn spec_source(&self) -> &'static str;
    /// `CONSTANTS` of the `.cfg` for this variant and these parameters, as (name, TLA+ value).
    fn tlc_constants(&self, variant: &VariantSpec, params: &Params) -> Vec<(&'static str, String)>;
    /// Runs stateright to completion; see [`check::run`].
    fn check(&self, variant: &VariantSpec, params: &Params, options: &CheckOptions) -> CheckReport;
    /// Serves the Explorer, calling `ready` with the address first; see [`check::serve`].
    fn explore(
        &self,
        variant: &VariantSpec,
        params: &Params,
        address: &str,
        ready: &dyn Fn(&str),
    ) -> Result<(), ModelError>;
}

/// How a stateright model reads in TLA+. Implemented by each model next to `impl Model`.
pub trait TlaModel: stateright::Model {
    /// The state as the spec's variables, in the spec's `VARIABLES` order.
    fn tla_state(&self, state: &Self::State) -> Vec<(&'static str, TlaValue)>;
    /// The action as the spec's action operator applied to its arguments.
    fn tla_action(&self, action: &Self::Action) -> TlaAction;
    /// The registry's description of the properties `properties()` returns, same order.
    fn property_specs(&self) -> &'static [PropertySpec];
}

/// An action in TLA+ syntax: the operator's name and its arguments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TlaAction {
    pub name: &'static str,
    pub args: Vec<TlaValue>,
}

impl fmt::Display for TlaAction {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.args.is_empty() {
            return write!(formatter, "{}", self.name);
        }
        let args: Vec<String> = self.args.iter().map(ToString::to_string).collect();
        write!(formatter, "{}({})", self.name, args.join(", "))
    }
}

/// How to run stateright.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// Checker threads. With 1 the BFS order makes every reported trace a shortest one.
    pub threads: usize,
    /// Record a shortest trace per property (costs a path rebuild per visited state; the
    /// benchmark turns it off).
    pub traces: bool,
    /// Stop at the first safety or liveness violation, as TLC does, instead of running to
    /// completion: the benchmark's "time to a verdict". Counts are then partial.
    pub stop_at_first_violation: bool,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            threads: 1,
            traces: true,
            stop_at_first_violation: false,
        }
    }
}

/// One state of a trace, variables by name (sorted, so comparisons are canonical).
pub type TlaState = BTreeMap<String, TlaValue>;

/// One step of a trace: the action that led here (none for the initial state), the line of
/// that action's definition in the spec, and the state it produced.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TraceStep {
    pub action: Option<TlaAction>,
    pub spec_line: Option<usize>,
    pub state: TlaState,
}

/// What the checker found for one property.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Safety or liveness: no counterexample in the whole state space.
    Holds,
    /// Safety or liveness: the trace is a shortest counterexample.
    Violated,
    /// Sometimes: the trace is a shortest witness.
    Reached,
    /// Sometimes: no reachable state has it, so the model never exercises that case.
    NeverReached,
}

#[derive(Debug, Clone, Serialize)]
pub struct PropertyOutcome {
    pub name: &'static str,
    pub kind: PropertyKind,
    pub about: &'static str,
    pub status: Status,
    /// Present for `Violated` and `Reached` when traces were asked for.
    pub trace: Option<Vec<TraceStep>>,
}

/// The result of one stateright run to completion.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub model: &'static str,
    pub variant: &'static str,
    pub params: Params,
    pub threads: usize,
    /// Distinct states (stateright's `unique_state_count`, TLC's "distinct states").
    pub states_distinct: usize,
    /// Initial states plus every successor computed (TLC's "states generated").
    pub states_generated: usize,
    pub depth_max: usize,
    pub elapsed_seconds: f64,
    pub properties: Vec<PropertyOutcome>,
}

/// The overall finding of a report, worst first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Finding {
    /// A safety property failed, or a `sometimes` was never reached (the run proves nothing).
    SafetyViolation,
    LivenessViolation,
    Holds,
}

impl CheckReport {
    pub fn finding(&self) -> Finding {
        let failed = |kind: PropertyKind| {
            self.properties.iter().any(|outcome| {
                outcome.kind == kind
                    && matches!(outcome.status, Status::Violated | Status::NeverReached)
            })
        };
        if failed(PropertyKind::Safety) || failed(PropertyKind::Sometimes) {
            Finding::SafetyViolation
        } else if failed(PropertyKind::Liveness) {
            Finding::LivenessViolation
        } else {
            Finding::Holds
        }
    }

    pub fn outcome(&self, property: &str) -> Option<&PropertyOutcome> {
        self.properties
            .iter()
            .find(|outcome| outcome.name == property)
    }
}

/// Finds a model by its command-line name.
pub fn find_model(name: &str) -> Result<&'static dyn ModelEntry, ModelError> {
    let models = registry();
    models
        .iter()
        .copied()
        .find(|entry| entry.name() == name)
        .ok_or_else(|| ModelError::UnknownModel {
            found: name.to_string(),
            accepted: models
                .iter()
                .map(|entry| entry.name())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// Finds a variant by name; `None` means the model's first (default) variant.
pub fn find_variant(
    entry: &dyn ModelEntry,
    name: Option<&str>,
) -> Result<&'static VariantSpec, ModelError> {
    let variants = entry.variants();
    let Some(name) = name else {
        return Ok(&variants[0]);
    };
    variants
        .iter()
        .find(|variant| variant.name == name)
        .ok_or_else(|| ModelError::UnknownVariant {
            model: entry.name().to_string(),
            found: name.to_string(),
            accepted: variants
                .iter()
                .map(|variant| variant.name)
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// Parses `NAME=VALUE` overrides over the model's defaults, checking names and ranges.
pub fn resolve_params(entry: &dyn ModelEntry, overrides: &[String]) -> Result<Params, ModelError> {
    let specs = entry.params();
    let mut values: Vec<(&'static str, u64)> =
        specs.iter().map(|spec| (spec.name, spec.default)).collect();
    for text in overrides {
        let (name, value) = text
            .split_once('=')
            .ok_or_else(|| ModelError::BadParamSyntax {
                found: text.clone(),
            })?;
        let index = specs
            .iter()
            .position(|spec| spec.name == name.trim())
            .ok_or_else(|| {
                let accepted: Vec<String> = specs
                    .iter()
                    .map(|spec| {
                        format!(
                            "{} ({}..={}, default {})",
                            spec.name, spec.min, spec.max, spec.default
                        )
                    })
                    .collect();
                ModelError::UnknownParam {
                    model: entry.name().to_string(),
                    found: name.to_string(),
                    accepted: accepted.join(", "),
                }
            })?;
        let spec = &specs[index];
        let bad = || ModelError::BadParamValue {
            param: spec.name.to_string(),
            found: value.to_string(),
            min: spec.min,
            max: spec.max,
        };
        let parsed: u64 = value.trim().parse().map_err(|_| bad())?;
        if !(spec.min..=spec.max).contains(&parsed) {
            return Err(bad());
        }
        values[index].1 = parsed;
    }
    Ok(Params(values))
}

/// The parameters every model is checked with in CI: its defaults.
pub fn default_params(entry: &dyn ModelEntry) -> Params {
    Params(
        entry
            .params()
            .iter()
            .map(|spec| (spec.name, spec.default))
            .collect(),
    )
}

/// The `.cfg` TLC runs for a variant and parameters: the spec's `Spec`, the constants, the
/// safety properties as invariants and the liveness ones as temporal properties (TLC has no
/// `sometimes`; those are stateright's alone).
pub fn cfg_text(entry: &dyn ModelEntry, variant: &VariantSpec, params: &Params) -> String {
    let mut text = format!(
        "\\* {} variant `{}` at {params}.\n\\* Generated by model::cfg_text; \
         a test keeps this file equal to it.\n",
        entry.spec_module(),
        variant.name
    );
    text.push_str("SPECIFICATION Spec\nCONSTANTS\n");
    for (name, value) in entry.tlc_constants(variant, params) {
        text.push_str(&format!("    {name} = {value}\n"));
    }
    for (kind, keyword) in [
        (PropertyKind::Safety, "INVARIANTS"),
        (PropertyKind::Liveness, "PROPERTIES"),
    ] {
        let names: Vec<&str> = entry
            .properties()
            .iter()
            .filter(|spec| spec.kind == kind)
            .map(|spec| spec.name)
            .collect();
        if !names.is_empty() {
            text.push_str(&format!("{keyword}\n"));
            for name in names {
                text.push_str(&format!("    {name}\n"));
            }
        }
    }
    text
}

/// The committed `.cfg` file name of a variant, e.g. `MigrationNaive.cfg`.
pub fn cfg_file_name(entry: &dyn ModelEntry, variant: &VariantSpec) -> String {
    let mut chars = variant.name.chars();
    let capitalized = match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect::<String>(),
        None => String::new(),
    };
    format!("{}{capitalized}.cfg", entry.spec_module())
}

/// The 1-based line where the spec defines `action` (`Name(...) ==` or `Name ==`).
pub fn spec_line(spec_source: &str, action: &str) -> Option<usize> {
    spec_source
        .lines()
        .position(|line| {
            line.strip_prefix(action).is_some_and(|rest| {
                let rest = rest.trim_start();
                rest.starts_with('(') || rest.starts_with("==")
            })
        })
        .map(|index| index + 1)
}
