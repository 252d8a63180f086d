//! `crosscheck verify`: the main job. Each area contributes its checks as
//! [`Row`]s; the summary table lists every check with its verdict, and the
//! exit code is the worst verdict of all.
//!
//! An area that cannot run at all (say TLC is missing) is a row that failed,
//! with the error as its detail: verify never skips a check silently.

use std::time::Instant;

use clap::Args;

use crate::verdict::Verdict;

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Machine-readable output: the rows as a JSON array.
    #[arg(long)]
    pub json: bool,
}

/// One line of the summary table.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Row {
    /// The area: `backup`, `models`, `sim`, `sim-migration`, `migration`.
    pub area: String,
    /// What was checked, in a few words.
    pub check: String,
    /// Whether it came out as expected. A check that expects a violation
    /// (a naive variant that must be caught) passes when the violation is found.
    pub passed: bool,
    /// Figures and findings, one line.
    pub detail: String,
}

type AreaCheck = fn() -> anyhow::Result<Vec<Row>>;

/// The areas in the order they run: cheapest and most basic first.
const AREAS: &[(&str, AreaCheck)] = &[
    ("backup", crate::cli_backup::verify_rows),
    ("models", crate::cli_models::verify_rows),
    ("sim", crate::cli_sim::verify_rows),
    ("sim-migration", sim_migration_rows),
    ("migration", crate::cli_migrate::verify_rows),
];

pub fn run(args: VerifyArgs) -> anyhow::Result<Verdict> {
    let started = Instant::now();
    crate::output::note!("verify: {} areas: {}", AREAS.len(), area_names());
    let mut rows = Vec::new();
    for (area, check) in AREAS {
        let area_started = Instant::now();
        crate::output::note!("verify: {area} ...");
        match check() {
            Ok(area_rows) => rows.extend(area_rows),
            Err(error) => rows.push(Row {
                area: area.to_string(),
                check: "area could not run".to_string(),
                passed: false,
                detail: format!("{error:#}"),
            }),
        }
        crate::output::note!(
            "verify: {area} done in {:.1} s",
            area_started.elapsed().as_secs_f64()
        );
    }
    let failed = rows.iter().filter(|row| !row.passed).count();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print_table(&rows);
        println!(
            "\n{} checks, {} passed, {} failed, in {:.1} s",
            rows.len(),
            rows.len() - failed,
            failed,
            started.elapsed().as_secs_f64()
        );
    }
    Ok(if failed == 0 {
        Verdict::Holds
    } else {
        Verdict::SafetyViolation
    })
}

/// The simulated migration: `fixed` over a batch of seeds, `naive` caught with
/// every named kind of failure, and a seed of each replayed bit for bit.
fn sim_migration_rows() -> anyhow::Result<Vec<Row>> {
    const FIXED_SEEDS: u64 = 300;
    let jobs = std::thread::available_parallelism().map_or(1, |count| count.get());
    let checks = sim::migration::verify_checks(FIXED_SEEDS, jobs);
    anyhow::ensure!(
        !checks.is_empty(),
        "the migration scenario returned no checks"
    );
    Ok(checks
        .into_iter()
        .map(|check| Row {
            area: "sim-migration".to_string(),
            check: check.check,
            passed: check.passed,
            detail: check.detail,
        })
        .collect())
}

fn area_names() -> String {
    AREAS
        .iter()
        .map(|(name, _)| *name)
        .collect::<Vec<_>>()
        .join(", ")
}

fn print_table(rows: &[Row]) {
    let area_width = rows
        .iter()
        .map(|row| row.area.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let check_width = rows
        .iter()
        .map(|row| row.check.len())
        .max()
        .unwrap_or(5)
        .max(5);
    println!(
        "{:<area_width$}  {:<check_width$}  {:<6}  detail",
        "area", "check", "result"
    );
    for row in rows {
        let result = if row.passed { "ok" } else { "FAILED" };
        println!(
            "{:<area_width$}  {:<check_width$}  {:<6}  {}",
            row.area, row.check, result, row.detail
        );
    }
}
