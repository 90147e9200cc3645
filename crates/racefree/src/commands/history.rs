//! `racefree history slowest|flaky|failed [--json]`: what the run history knows.

use std::process::ExitCode;

use clap::{Args, ValueEnum};
use racefree_runner::history::{History, TestStat};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Query {
    /// Slowest tests by recency-weighted duration.
    Slowest,
    /// Tests whose outcome changed between runs.
    Flaky,
    /// Tests that failed in their last run.
    Failed,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// slowest (recency-weighted), flaky (outcome flipped) or failed (in their last run).
    #[arg(value_name = "slowest|flaky|failed", hide_possible_values = true)]
    pub query: Query,
    /// JSON output (an array of objects).
    #[arg(long)]
    pub json: bool,
    /// How many tests to show.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
}

pub fn run(args: HistoryArgs) -> miette::Result<ExitCode> {
    let cwd = std::env::current_dir()
        .map_err(|e| miette::miette!("cannot read the current directory: {e}"))?;
    let cfg =
        racefree_runner::config::determine_setup(&cwd, &[]).map_err(|e| miette::miette!("{e}"))?;
    let path = History::path_for(&cfg.rootdir);
    if !path.exists() {
        return Err(miette::miette!(
            help = "run `racefree run` first; history is kept per rootdir",
            "no history at {}",
            path.display()
        ));
    }
    let history = History::open(&cfg.rootdir).map_err(|e| miette::miette!("{e}"))?;
    let stats: Vec<TestStat> = match args.query {
        Query::Slowest => history.slowest(args.limit),
        Query::Flaky => history.flaky(args.limit),
        Query::Failed => history.failed(args.limit),
    }
    .map_err(|e| miette::miette!("{e}"))?;
    if args.json {
        let text = serde_json::to_string_pretty(&stats).map_err(|e| miette::miette!("{e}"))?;
        println!("{text}");
    } else {
        for s in &stats {
            match args.query {
                Query::Slowest => println!("{:>9.3}s  {}", s.duration, s.nodeid),
                Query::Flaky => println!("{:>3} flips {:>3} flaky  {}", s.flips, s.flaky, s.nodeid),
                Query::Failed => println!("{:<8} {}", s.last_outcome, s.nodeid),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
