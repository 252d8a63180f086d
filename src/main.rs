//! `crosscheck`: one command line for the three ways the harness checks a
//! design — real code under the simulator, stateright models, TLA+ specs
//! under TLC — and for the real backup and migration tools they check.
//!
//! Exit codes are typed so scripts never parse prose: see [`Verdict`].

mod bench_backup;
mod cli_backup;
mod cli_migrate;
mod cli_models;
mod cli_sim;
mod output;
mod verdict;
mod verify;

use clap::{Parser, Subcommand};
use verdict::Verdict;

#[derive(Debug, Parser)]
#[command(name = "crosscheck", version, about, long_about = None)]
struct Cli {
    /// More log output (repeat for more): -v info, -vv debug, -vvv trace.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The main job: every check the harness has, on its built-in defaults.
    Verify(verify::VerifyArgs),
    /// Back up a directory into a repository (created on first use).
    Backup(cli_backup::BackupArgs),
    /// Restore a snapshot into a target directory.
    Restore(cli_backup::RestoreArgs),
    /// List the snapshots in a repository.
    Snapshots(cli_backup::SnapshotsArgs),
    /// Re-hash every chunk and check every manifest's references.
    Fsck(cli_backup::FsckArgs),
    /// Model-check a design with stateright, with TLC's trace beside it.
    Check(cli_models::CheckArgs),
    /// Serve the stateright Explorer for a model on localhost.
    Explore(cli_models::ExploreArgs),
    /// Run the real TLC on a model's TLA+ spec.
    Tlc(cli_models::TlcArgs),
    /// Run many seeds of a simulation scenario.
    Sim(cli_sim::SimArgs),
    /// Replay one seed of a simulation scenario and print its event trace.
    Replay(cli_sim::ReplayArgs),
    /// Migrate a key-value store X to Y for real, under a built-in write load.
    Migrate(cli_migrate::MigrateArgs),
    /// Benchmarks against a peer in the same run (restic, TLC, a bulk copy).
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Backup throughput, dedup ratio and memory against restic and SHA-256.
    Backup(cli_backup::BenchBackupArgs),
    /// Time to a verdict and states per second, stateright against TLC.
    Models(cli_models::BenchModelsArgs),
    /// Seeds per minute and simulated time per wall time.
    Sim(cli_sim::BenchSimArgs),
    /// Keys migrated per second between two real databases.
    Migration(cli_migrate::BenchMigrationArgs),
}

fn main() {
    // Output piped into `head` ends quietly, as other command-line tools
    // do, instead of panicking on the closed pipe.
    // SAFETY: restoring the default action of a signal at start-up, before
    // any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let json = output::json_asked(std::env::args_os());
    output::set_json(json);
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // Help and version go out as clap prints them; a usage error, under
        // --json, as the JSON error every failed command prints.
        Err(error) if json && error.use_stderr() => {
            let rendered = error.render().to_string();
            let message = rendered.trim_start_matches("error: ").trim_end();
            output::print_error(message, Verdict::UsageOrEnvironment);
            std::process::exit(Verdict::UsageOrEnvironment.exit_code());
        }
        Err(error) => error.exit(),
    };
    init_tracing(cli.verbose, json);
    output::install_panic_hook();
    // A panic (a bug, or stdout that cannot be written) ends the run as an
    // error with a documented exit code, in JSON under --json.
    let result = std::panic::catch_unwind(|| run(cli.command));
    let verdict = match result {
        Ok(Ok(verdict)) => verdict,
        Ok(Err(error)) => {
            let verdict = Verdict::UsageOrEnvironment;
            output::print_error(&format!("{error:#}"), verdict);
            verdict
        }
        Err(payload) => {
            let verdict = Verdict::UsageOrEnvironment;
            let message = format!(
                "crosscheck stopped on an internal error: {} (a bug, or output it could not \
                 write; the lines above say where)",
                output::panic_text(payload.as_ref())
            );
            output::print_error(&message, verdict);
            verdict
        }
    };
    std::process::exit(verdict.exit_code());
}

fn run(command: Command) -> anyhow::Result<Verdict> {
    match command {
        Command::Verify(args) => verify::run(args),
        Command::Backup(args) => cli_backup::backup(args),
        Command::Restore(args) => cli_backup::restore(args),
        Command::Snapshots(args) => cli_backup::snapshots(args),
        Command::Fsck(args) => cli_backup::fsck(args),
        Command::Check(args) => cli_models::check(args),
        Command::Explore(args) => cli_models::explore(args),
        Command::Tlc(args) => cli_models::tlc(args),
        Command::Sim(args) => cli_sim::sim(args),
        Command::Replay(args) => cli_sim::replay(args),
        Command::Migrate(args) => cli_migrate::migrate(args),
        Command::Bench(BenchCommand::Backup(args)) => cli_backup::bench(args),
        Command::Bench(BenchCommand::Models(args)) => cli_models::bench(args),
        Command::Bench(BenchCommand::Sim(args)) => cli_sim::bench(args),
        Command::Bench(BenchCommand::Migration(args)) => cli_migrate::bench(args),
    }
}

/// Logs go to stderr: as text, or under `--json` as one JSON object a line,
/// so that everything a script reads from a `--json` run parses.
fn init_tracing(verbose: u8, json: bool) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("CROSSCHECK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    use std::io::IsTerminal;
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        logs.json().init();
    } else {
        logs.with_ansi(std::io::stderr().is_terminal()).init();
    }
}
