//! `racefree run`: parse the options, hand them to the engine, turn its answer into an exit
//! code. Everything else lives in racefree-runner.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use racefree_runner::config::{UnitMode, Workers};
use racefree_runner::isolation::IsolationMode;
use racefree_runner::{ProgressMode, RunRequest};

#[derive(Debug, Args)]
#[command(
    after_help = "Everything after `--` is passed to every pytest process unchanged.\n\
Exit codes (as pytest): 0 all passed, 1 tests failed, 2 interrupted or collection errors, \
3 internal error, 4 usage error, 5 no tests collected."
)]
pub struct RunArgs {
    /// Test paths and node ids, as for pytest (default: pytest's testpaths or the current directory).
    pub paths: Vec<String>,

    /// Worker slots: a number or `auto` (usable cores).
    #[arg(short = 'n', long = "workers", value_name = "N|auto")]
    pub workers: Option<Workers>,

    /// Python interpreter (default: $VIRTUAL_ENV, ./.venv, then python3 on PATH).
    #[arg(long, value_name = "PATH")]
    pub python: Option<PathBuf>,

    /// `file` runs one file per pytest process; `pack` (default) packs small files together.
    #[arg(long, value_name = "pack|file")]
    pub unit: Option<UnitMode>,

    /// Only run tests matching this pytest keyword expression (passed to every pytest process).
    #[arg(short = 'k', value_name = "EXPRESSION")]
    pub keyword: Option<String>,

    /// Only run tests matching this pytest mark expression (passed to every pytest process).
    #[arg(short = 'm', value_name = "MARKEXPR")]
    pub markexpr: Option<String>,

    /// Stop the whole run at the first failure.
    #[arg(short = 'x', long = "exitfirst")]
    pub exitfirst: bool,

    /// Stop the whole run after this many failures.
    #[arg(long, value_name = "N")]
    pub maxfail: Option<u32>,

    /// Run only the tests that failed last time (from racefree's history).
    #[arg(long = "lf", visible_alias = "last-failed")]
    pub last_failed: bool,

    /// Run the tests that failed last time first, then the rest.
    #[arg(long = "ff", visible_alias = "failed-first")]
    pub failed_first: bool,

    /// Write a JUnit XML report (pytest's conventions).
    #[arg(long = "junit-xml", value_name = "PATH")]
    pub junit_xml: Option<PathBuf>,

    /// Write the NDJSON event log (docs/events.md).
    #[arg(long, value_name = "PATH")]
    pub events: Option<PathBuf>,

    /// Show the N slowest tests (0 for all).
    #[arg(long, value_name = "N")]
    pub durations: Option<usize>,

    /// Less output (repeatable).
    #[arg(short = 'q', long = "quiet", action = clap::ArgAction::Count)]
    pub quiet: u8,

    /// More output: one line per test.
    #[arg(short = 'v', long = "verbose", action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Neither read nor write the run history.
    #[arg(long)]
    pub no_history: bool,

    /// Plain progress lines even on a terminal.
    #[arg(long)]
    pub plain: bool,

    /// Print the files discovery finds (estimated test count, path) and exit without running.
    #[arg(long)]
    pub list_files: bool,

    /// Isolation per unit: namespace (Linux), tmp, none; auto (default) is namespace where allowed.
    #[arg(long, value_name = "auto|none|tmp|namespace")]
    pub isolate: Option<IsolationMode>,

    /// A network namespace per unit, loopback only (needs namespace isolation).
    #[arg(long)]
    pub private_network: bool,

    #[command(flatten)]
    pub ci: super::sharding::ShardArgs,

    /// Arguments for pytest, after `--`.
    #[arg(last = true, value_name = "PYTEST_ARGS")]
    pub pytest_args: Vec<String>,
}

pub fn run(args: RunArgs) -> miette::Result<ExitCode> {
    let invocation_dir = std::env::current_dir()
        .map_err(|e| miette::miette!("cannot read the current directory: {e}"))?;
    let (paths, sharding) = match args.ci.resolve(args.paths, &invocation_dir) {
        Ok(Some(resolved)) => resolved,
        Ok(None) => return Ok(ExitCode::from(racefree_runner::error::exit::NO_TESTS)),
        Err(e) => return Ok(super::sharding::usage_error("racefree run", &e)),
    };
    let request = RunRequest {
        invocation_dir,
        args: paths,
        pytest_args: args.pytest_args,
        workers: args.workers,
        python: args.python,
        unit: args.unit,
        keyword: args.keyword,
        markexpr: args.markexpr,
        exitfirst: args.exitfirst,
        maxfail: args.maxfail,
        last_failed: args.last_failed,
        failed_first: args.failed_first,
        junit_xml: args.junit_xml,
        events: args.events,
        verbosity: i32::from(args.verbose) - i32::from(args.quiet),
        durations: args.durations,
        no_history: args.no_history,
        list_files: args.list_files,
        sharding,
        isolate: args.isolate,
        private_network: args.private_network,
        // Units start this very executable as `racefree __unit-init` for namespace isolation.
        init_program: std::env::current_exe().ok(),
        progress: if args.plain {
            ProgressMode::Plain
        } else {
            ProgressMode::Auto
        },
    };
    match racefree_runner::run(request) {
        Ok(code) => Ok(ExitCode::from(code)),
        Err(e) => {
            eprintln!("{:?}", miette::Report::msg(format!("racefree run: {e}")));
            Ok(ExitCode::from(e.exit_code()))
        }
    }
}
