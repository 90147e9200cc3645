//! `racefree run`: parse the options, hand them to the engine, turn its answer into an exit
//! code. Everything else lives in racefree-runner.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use clap::Args;
use racefree_runner::config::{FlakyResult, UnitMode, Workers};
use racefree_runner::isolation::IsolationMode;
use racefree_runner::{ProgressMode, RunRequest};

#[derive(Debug, Args)]
#[command(
    after_help = "Everything after `--` goes to every pytest process. Options: docs/run.md\n\
Exit codes: 0 passed, 1 failed, 2 interrupted or collection errors, 3 internal, 4 usage, 5 no tests"
)]
pub struct RunArgs {
    /// Test paths and node ids (default: pytest's testpaths).
    pub paths: Vec<String>,

    /// Worker slots: a number or `auto` (usable cores).
    #[arg(short = 'n', long = "workers", value_name = "N|auto")]
    pub workers: Option<Workers>,

    /// Python to use [default: $VIRTUAL_ENV, ./.venv, python3].
    #[arg(long, value_name = "PATH")]
    pub python: Option<PathBuf>,

    /// One `file` per process (default when forking) or `pack` them.
    #[arg(long, value_name = "pack|file")]
    pub unit: Option<UnitMode>,

    /// Only tests matching this keyword expression.
    #[arg(short = 'k', value_name = "EXPRESSION")]
    pub keyword: Option<String>,

    /// Only tests matching this mark expression.
    #[arg(short = 'm', value_name = "MARKEXPR")]
    pub markexpr: Option<String>,

    /// Stop the whole run at the first failure.
    #[arg(short = 'x', long = "exitfirst")]
    pub exitfirst: bool,

    /// Stop the whole run after this many failures.
    #[arg(long, value_name = "N")]
    pub maxfail: Option<u32>,

    /// Run only the tests that failed last time.
    #[arg(long = "lf", visible_alias = "last-failed")]
    pub last_failed: bool,

    /// Run last time's failures first.
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

    /// Print the files discovery finds, run nothing.
    #[arg(long)]
    pub list_files: bool,

    /// Spawn a fresh interpreter per unit instead of forking one.
    #[arg(long)]
    pub no_fork: bool,

    /// Never split a long file over several processes.
    #[arg(long)]
    pub no_split: bool,

    /// Fail a test running longer than SECS (0: no limit).
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<f64>,

    /// Seconds from SIGTERM to SIGKILL when stopping a unit [2].
    #[arg(long, value_name = "SECS")]
    pub kill_grace: Option<f64>,

    /// Stop the whole run after SECS (exit 2).
    #[arg(long, value_name = "SECS")]
    pub run_timeout: Option<f64>,

    /// Run a failed test again up to N times; a pass is FLAKY.
    #[arg(long, value_name = "N")]
    pub retries: Option<u32>,

    /// Whether a FLAKY test counts as passed (default) or failed.
    #[arg(long, value_name = "pass|fail")]
    pub flaky_result: Option<FlakyResult>,

    /// Restart a unit that exits 3 or 4 before any test [2].
    #[arg(long, value_name = "N")]
    pub infra_retries: Option<u32>,

    /// auto (default), namespace (Linux), tmp or none.
    #[arg(long, value_name = "MODE")]
    pub isolate: Option<IsolationMode>,

    /// Loopback-only network per unit (namespace mode).
    #[arg(long)]
    pub private_network: bool,

    #[command(flatten)]
    pub ci: super::sharding::ShardArgs,

    /// Arguments for pytest, after `--`.
    #[arg(last = true, value_name = "PYTEST_ARGS")]
    pub pytest_args: Vec<String>,
}

/// Counts SIGINT and SIGTERM from now on, instead of dying: the engine stops the run
/// gracefully on the first and kills everything on the second, and still writes its reports;
/// a third ends racefree on the spot.
fn count_interrupts() -> miette::Result<Arc<AtomicUsize>> {
    let count = Arc::new(AtomicUsize::new(0));
    let mut signals = Signals::new([SIGINT, SIGTERM])
        .map_err(|e| miette::miette!("cannot handle SIGINT/SIGTERM: {e}"))?;
    let counter = count.clone();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for _ in signals.forever() {
                // A third signal means racefree itself is stuck somewhere (a report file on a
                // hung mount, say): leave at once. Units die with us (PR_SET_PDEATHSIG).
                if counter.fetch_add(1, Ordering::SeqCst) >= 2 {
                    std::process::exit(130);
                }
            }
        })
        .map_err(|e| miette::miette!("cannot start the signal thread: {e}"))?;
    Ok(count)
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
        no_fork: args.no_fork,
        no_split: args.no_split,
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
        timeout: args.timeout,
        kill_grace: args.kill_grace,
        run_timeout: args.run_timeout,
        retries: args.retries,
        flaky_result: args.flaky_result,
        infra_retries: args.infra_retries,
        interrupts: Some(count_interrupts()?),
    };
    match racefree_runner::run(request) {
        Ok(code) => Ok(ExitCode::from(code)),
        Err(e) => {
            eprintln!("{:?}", miette::Report::msg(format!("racefree run: {e}")));
            Ok(ExitCode::from(e.exit_code()))
        }
    }
}
