//! The `racefree` command line: argument parsing, config loading, exit codes and rendering.
//! Every subcommand lives in its own module under `commands/`; this file only dispatches.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[cfg(not(unix))]
compile_error!(
    "racefree supports Unix only (Linux first-class, macOS); Windows is not supported yet"
);

mod commands;
mod platform;

/// Run Python test suites in parallel with no races, no hangs and no lost results,
/// and lock shared resources safely across processes.
#[derive(Debug, Parser)]
#[command(name = "racefree", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size of the largest variant costs nothing worth boxing for.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Run a command while holding a cross-process lock (flock(1)-compatible, crash-safe).
    Lock(commands::lock::LockArgs),
    /// Find tests that are unsafe in parallel (shared paths, fixed ports, unrestored global state).
    Audit(commands::audit::AuditArgs),
    /// Run a pytest suite in parallel: exactly pytest's results, sooner.
    Run(commands::run::RunArgs),
    /// Show what racefree's run history knows: slowest, flaky or failed tests.
    History(commands::history::HistoryArgs),
    /// Remove session directories of dead runs (by owner liveness, never by age).
    Clean(commands::clean::CleanArgs),
    /// Split the test files over N CI machines, balanced by predicted durations.
    Plan(commands::plan::PlanArgs),
    /// Export measured durations, or import (merge) other machines' exports into history.
    Durations(commands::durations::DurationsArgs),
    /// Internal: run one unit's command in fresh namespaces under racefree's init.
    #[command(name = racefree_runner::isolation::INIT_SUBCOMMAND, hide = true)]
    UnitInit(commands::unit_init::UnitInitArgs),
    /// Internal: make a namespaced fork server's unit inits.
    #[command(name = racefree_runner::isolation::FACTORY_SUBCOMMAND, hide = true)]
    InitFactory(commands::init_factory::InitFactoryArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            // --help and --version are not errors; every other parse failure is a usage error,
            // exit 4 as pytest uses (clap's own default would be 2, which pytest uses for
            // interrupted runs).
            let _ = err.print();
            return if err.use_stderr() {
                ExitCode::from(commands::EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let result = match cli.command {
        Command::Lock(args) => commands::lock::run(args),
        Command::Audit(args) => commands::audit::run(args),
        Command::Run(args) => commands::run::run(args),
        Command::History(args) => commands::history::run(args),
        Command::Clean(args) => commands::clean::run(args),
        Command::Plan(args) => commands::plan::run(args),
        Command::Durations(args) => commands::durations::run(args),
        Command::UnitInit(args) => commands::unit_init::run(args),
        Command::InitFactory(args) => commands::init_factory::run(args),
    };
    match result {
        Ok(code) => code,
        Err(report) => {
            eprintln!("{report:?}");
            ExitCode::from(commands::EXIT_INTERNAL)
        }
    }
}
