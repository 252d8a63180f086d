//! `migrate` and `bench migration`: the fixed migration between two real embedded databases,
//! under a built-in write load, checked key by key at the end.
//!
//! The exit code is the verdict: 0 when Y holds the last acknowledged write of every key,
//! 1 when the final comparison (or a read) found otherwise, 3 when verify never converged.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use migration::Phase;
use migration::live::{self, LiveConfig, LiveError, LiveReport, LoadConfig};
use migration::phase_log::{FilePhaseLog, MemPhaseLog, PhaseLog};
use migration::store::{Entry, Store};
use migration::url::StoreUrl;

use crate::verdict::Verdict;
use crate::verify::Row;

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// Store X, e.g. `sqlite:///path/x.db` or `redb:///path/x.redb` (or `memory:`).
    #[arg(long)]
    pub from: String,
    /// Store Y, same forms as --from. Must be empty unless resuming a recorded migration.
    #[arg(long)]
    pub to: String,
    /// Keys to seed X with when X is empty.
    #[arg(long, default_value_t = 10_000)]
    pub keys: u64,
    /// Writer threads of the built-in load.
    #[arg(long, default_value_t = 4)]
    pub writers: usize,
    /// Operations per writer, at most.
    #[arg(long, default_value_t = 2_000)]
    pub ops_per_writer: u64,
    /// Wall-clock cap on the load, in seconds.
    #[arg(long, default_value_t = 60)]
    pub load_seconds_max: u64,
    /// Seed of the load's generators (writer i uses seed + i).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Keys per backfill batch and per verify read.
    #[arg(long, default_value_t = 1_000)]
    pub batch_keys: usize,
    /// Where the coordinator records its phase [default: Y's path + `.migration.json`].
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct BenchMigrationArgs {
    /// Keys in X (SQLite) to migrate to Y (redb).
    #[arg(long, default_value_t = 1_000_000)]
    pub keys: u64,
    /// Writer threads loading both stores during the migration.
    #[arg(long, default_value_t = 2)]
    pub writers: usize,
    #[arg(long, default_value_t = 1_000)]
    pub batch_keys: usize,
    /// Directory for the databases [default: a temporary directory, removed afterwards].
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

/// Verify passes allowed before giving up: each repairs what it finds, so more than a few
/// means the load outruns the verifier.
const VERIFY_PASSES_MAX: u64 = 20;

pub fn migrate(args: MigrateArgs) -> anyhow::Result<Verdict> {
    let from = StoreUrl::parse(&args.from).context("--from")?;
    let to = StoreUrl::parse(&args.to).context("--to")?;
    if from.path().is_some() && from.path() == to.path() {
        bail!("--from and --to name the same database {from}; expected two different stores");
    }
    let x = from
        .open()
        .with_context(|| format!("opening X at {from}"))?;
    let y = to.open().with_context(|| format!("opening Y at {to}"))?;
    let mut log = phase_log_for(&to, args.state.clone());
    let seeded = prepare(
        x.as_ref(),
        y.as_ref(),
        log.as_ref(),
        &to,
        args.keys,
        args.batch_keys,
    )?;
    let config = LiveConfig {
        batch_keys: args.batch_keys,
        verify_passes_max: VERIFY_PASSES_MAX,
        load: LoadConfig {
            writers: args.writers,
            ops_per_writer_max: args.ops_per_writer,
            duration_max: Duration::from_secs(args.load_seconds_max),
            key_space: args.keys + args.keys / 10,
            delete_percent: 20,
            seed: args.seed,
        },
    };
    tracing::info!(%from, %to, seed = args.seed, writers = args.writers, "migrate");
    let report = match live::run_fixed(x.as_ref(), y.as_ref(), log.as_mut(), &config) {
        Ok(report) => report,
        Err(error @ LiveError::VerifyDidNotConverge { .. }) => {
            let message = format!("liveness violation: {error}");
            crate::output::print_error(&message, Verdict::LivenessViolation);
            return Ok(Verdict::LivenessViolation);
        }
        Err(error) => return Err(error).context("the migration failed"),
    };
    if args.json {
        let json = serde_json::json!({
            "from": from.to_string(), "to": to.to_string(), "seeded_keys": seeded,
            "seed": args.seed, "holds": report.holds(), "report": report,
        });
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        print_report(&from, &to, seeded, &args, &report);
    }
    Ok(if report.holds() {
        Verdict::Holds
    } else {
        Verdict::SafetyViolation
    })
}

fn phase_log_for(to: &StoreUrl, state: Option<PathBuf>) -> Box<dyn PhaseLog> {
    let default = to.path().map(|path| {
        let mut name = path.as_os_str().to_owned();
        name.push(".migration.json");
        PathBuf::from(name)
    });
    match state.or(default) {
        Some(path) => Box::new(FilePhaseLog::new(path)),
        None => Box::new(MemPhaseLog::new()),
    }
}

/// Checks the stores suit a new or resumed migration, and seeds an empty X. Returns the
/// number of keys seeded.
fn prepare(
    x: &dyn Store,
    y: &dyn Store,
    log: &dyn PhaseLog,
    to: &StoreUrl,
    keys: u64,
    batch_keys: usize,
) -> anyhow::Result<u64> {
    match log.load()? {
        Some(record) if record.phase == Phase::Done => bail!(
            "the migration to {to} recorded in its state file is already Done; remove the \
             state file (or pass another --state) to migrate again"
        ),
        Some(record) => {
            crate::output::note!("resuming the recorded migration in phase {}", record.phase);
            return Ok(0);
        }
        None => {}
    }
    if !y.scan(None, 1)?.is_empty() {
        bail!(
            "Y ({to}) already holds keys but no migration to it is recorded; expected an empty \
             Y — choose a new --to, or pass the --state file of the migration that wrote it"
        );
    }
    if !x.scan(None, 1)?.is_empty() {
        return Ok(0);
    }
    seed_keys(x, keys, batch_keys)?;
    Ok(keys)
}

/// Fills an empty store with `keys` keys, each at version 1, in batches.
fn seed_keys(store: &dyn Store, keys: u64, batch_keys: usize) -> anyhow::Result<()> {
    let batch_keys = batch_keys.max(1) as u64;
    for start in (0..keys).step_by(batch_keys as usize) {
        let batch: Vec<(String, Entry)> = (start..keys.min(start + batch_keys))
            .map(|index| {
                (
                    format!("key-{index:08}"),
                    Entry::value(format!("seed-{index}"), 1),
                )
            })
            .collect();
        store.put_batch_unconditional(&batch)?;
    }
    Ok(())
}

/// One row per phase: how long it took and what the load did in it.
fn print_phases(report: &LiveReport) {
    println!(
        "{:<14} {:>9} {:>8} {:>8} {:>8} {:>8}",
        "phase", "time_ms", "puts", "deletes", "absent", "reads"
    );
    for counts in &report.phases {
        let phase = counts
            .phase
            .map_or("-".to_string(), |phase| phase.to_string());
        println!(
            "{phase:<14} {:>9} {:>8} {:>8} {:>8} {:>8}",
            counts.duration_ms, counts.puts, counts.deletes, counts.deletes_absent, counts.reads
        );
    }
}

fn print_report(
    from: &StoreUrl,
    to: &StoreUrl,
    seeded: u64,
    args: &MigrateArgs,
    report: &LiveReport,
) {
    println!(
        "migrate {from} -> {to} (fixed design): seed {}, {} writers",
        args.seed, args.writers
    );
    if seeded > 0 {
        println!("seeded X with {seeded} keys");
    }
    print_phases(report);
    let record = &report.record;
    println!(
        "backfill: {} keys scanned, {} applied, {} already newer in Y; {:.0} keys/s",
        record.backfill_keys_scanned,
        record.backfill_keys_applied,
        record.backfill_keys_stale,
        report.backfill_keys_per_second
    );
    println!(
        "verify: {} pass(es), {} keys compared, {} mismatches found, {} repaired (the rest \
         resolved by writes in flight); last pass found {}",
        record.verify_passes,
        record.verify_keys_compared,
        record.verify_mismatches_found,
        record.verify_mismatches_repaired,
        report
            .last_verify
            .as_ref()
            .map_or(0, |pass| pass.report.count)
    );
    for mismatch in report
        .last_verify
        .iter()
        .flat_map(|pass| &pass.report.samples)
    {
        println!(
            "  mismatch {:?} {:?}: X {:?}, Y {:?}",
            mismatch.key, mismatch.kind, mismatch.x, mismatch.y
        );
    }
    println!(
        "load: {} ops, {:.0} ops/s, {} errors, {} stale reads{}",
        report.load_ops,
        report.load_ops_per_second,
        report.load_errors,
        report.stale_reads,
        report
            .load_first_error
            .as_deref()
            .map_or(String::new(), |error| format!(" (first: {error})"))
    );
    println!(
        "final comparison: {} keys, {} mismatches (Y against each key's last acknowledged write)",
        report.final_keys_checked, report.final_check.count
    );
    for mismatch in &report.final_check.samples {
        println!(
            "  {:?} {:?}: expected {:?}, Y holds {:?}",
            mismatch.key, mismatch.kind, mismatch.x, mismatch.y
        );
    }
    println!(
        "migration {} ms, total with checks {} ms; verdict: {}",
        report.migration_ms,
        report.duration_ms,
        if report.holds() { "holds" } else { "VIOLATED" }
    );
}

pub fn bench(args: BenchMigrationArgs) -> anyhow::Result<Verdict> {
    let temporary = tempfile::tempdir().context("creating a temporary directory")?;
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| temporary.path().to_path_buf());
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let paths =
        ["x.db", "y.redb", "y-bulk.redb", "y.redb.migration.json"].map(|name| dir.join(name));
    for path in &paths {
        if path.exists() {
            bail!(
                "{} exists; expected a directory without earlier bench files",
                path.display()
            );
        }
    }
    let x = StoreUrl::Sqlite(paths[0].clone()).open()?;
    let started = Instant::now();
    seed_keys(x.as_ref(), args.keys, 10_000)?;
    let seed_seconds = started.elapsed().as_secs_f64();
    crate::output::note!(
        "seeded {} keys into SQLite in {seed_seconds:.1} s",
        args.keys
    );

    let bulk = StoreUrl::Redb(paths[2].clone()).open()?;
    let bulk_seconds = bulk_copy(x.as_ref(), bulk.as_ref(), args.batch_keys)?;
    let bulk_keys_per_second = args.keys as f64 / bulk_seconds;
    crate::output::note!("bulk copy: {bulk_keys_per_second:.0} keys/s");
    drop(bulk);

    let y = StoreUrl::Redb(paths[1].clone()).open()?;
    let mut log = FilePhaseLog::new(paths[3].clone());
    let config = LiveConfig {
        batch_keys: args.batch_keys,
        verify_passes_max: VERIFY_PASSES_MAX,
        load: LoadConfig {
            writers: args.writers,
            ops_per_writer_max: u64::MAX,
            duration_max: Duration::from_secs(3_600),
            key_space: args.keys + args.keys / 10,
            delete_percent: 20,
            seed: 1,
        },
    };
    let report = live::run_fixed(x.as_ref(), y.as_ref(), &mut log, &config)?;
    let backfill_ratio = report.backfill_keys_per_second / bulk_keys_per_second;
    let migration_keys_per_second = args.keys as f64 * 1000.0 / report.migration_ms.max(1) as f64;
    let figures = serde_json::json!({
        "keys": args.keys, "writers": args.writers, "batch_keys": args.batch_keys,
        "bulk_copy_keys_per_second": bulk_keys_per_second,
        "backfill_keys_per_second_under_load": report.backfill_keys_per_second,
        "backfill_to_bulk_ratio": backfill_ratio,
        "whole_migration_keys_per_second": migration_keys_per_second,
        "whole_migration_ms": report.migration_ms,
        "load_ops": report.load_ops, "load_ops_per_second": report.load_ops_per_second,
        "verify_passes": report.record.verify_passes,
        "verify_mismatches_found": report.record.verify_mismatches_found,
        "final_mismatches": report.final_check.count, "holds": report.holds(),
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&figures)?);
    } else {
        print_bench(&args, bulk_keys_per_second, &report);
    }
    Ok(if report.holds() {
        Verdict::Holds
    } else {
        Verdict::SafetyViolation
    })
}

/// The bench figures as a small table; the ratio is backfill under load over bulk copy.
fn print_bench(args: &BenchMigrationArgs, bulk_keys_per_second: f64, report: &LiveReport) {
    let backfill_ratio = report.backfill_keys_per_second / bulk_keys_per_second;
    let migration_keys_per_second = args.keys as f64 * 1000.0 / report.migration_ms.max(1) as f64;
    println!(
        "bench migration: {} keys, SQLite -> redb, {} writers",
        args.keys, args.writers
    );
    println!("  bulk copy (ceiling, no load):  {bulk_keys_per_second:>10.0} keys/s");
    println!(
        "  backfill under load:           {:>10.0} keys/s  ({:.2}x of bulk)",
        report.backfill_keys_per_second, backfill_ratio
    );
    println!(
        "  whole migration (all phases):  {migration_keys_per_second:>10.0} keys/s  ({} ms)",
        report.migration_ms
    );
    println!(
        "  load: {} ops at {:.0} ops/s; verify {} pass(es), {} mismatches repaired; final \
         mismatches {}",
        report.load_ops,
        report.load_ops_per_second,
        report.record.verify_passes,
        report.record.verify_mismatches_repaired,
        report.final_check.count
    );
}

/// The ceiling: read X in key order and write each batch to Y unconditionally, no load.
fn bulk_copy(x: &dyn Store, y: &dyn Store, batch_keys: usize) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut cursor: Option<String> = None;
    loop {
        let batch = x.scan(cursor.as_deref(), batch_keys)?;
        let Some((last, _)) = batch.last() else { break };
        cursor = Some(last.clone());
        y.put_batch_unconditional(&batch)?;
    }
    Ok(started.elapsed().as_secs_f64().max(1e-9))
}

/// For `crosscheck verify`: a small fixed migration from SQLite to redb temp files under a
/// write load, which must finish with zero mismatches.
pub fn verify_rows() -> anyhow::Result<Vec<Row>> {
    let directory = tempfile::tempdir().context("creating a temporary directory")?;
    let x = StoreUrl::Sqlite(directory.path().join("x.db")).open()?;
    let y = StoreUrl::Redb(directory.path().join("y.redb")).open()?;
    let keys = 2_000;
    seed_keys(x.as_ref(), keys, 500)?;
    let mut log = FilePhaseLog::new(directory.path().join("phase.json"));
    let config = LiveConfig {
        batch_keys: 200,
        verify_passes_max: VERIFY_PASSES_MAX,
        load: LoadConfig {
            writers: 2,
            ops_per_writer_max: 300,
            duration_max: Duration::from_secs(30),
            key_space: keys + keys / 10,
            delete_percent: 20,
            seed: 1,
        },
    };
    let report = live::run_fixed(x.as_ref(), y.as_ref(), &mut log, &config)?;
    let record = &report.record;
    let detail = format!(
        "{keys} keys, {} load ops; backfill {} keys; verify {} pass(es), {} found/{} repaired; \
         final {} keys, {} mismatches; {} stale reads",
        report.load_ops,
        record.backfill_keys_scanned,
        record.verify_passes,
        record.verify_mismatches_found,
        record.verify_mismatches_repaired,
        report.final_keys_checked,
        report.final_check.count,
        report.stale_reads
    );
    let check = "fixed migration SQLite -> redb under load".to_string();
    Ok(vec![Row {
        area: "migration".to_string(),
        check,
        passed: report.holds(),
        detail,
    }])
}
