//! `racefree durations export|import`: measured durations that travel between CI machines
//! (docs/ci.md). Export writes local history as a file; import merges files back into it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Args, Subcommand, ValueEnum};
use racefree_runner::durations::{Durations, Format};
use racefree_runner::durations_store;
use racefree_runner::history::History;

#[derive(Debug, Args)]
pub struct DurationsArgs {
    #[command(subcommand)]
    pub command: DurationsCommand,
}

#[derive(Debug, Subcommand)]
pub enum DurationsCommand {
    /// Write the durations local history knows (tests whose file is gone are left out).
    Export(ExportArgs),
    /// Merge durations files into local history (newest measurement wins; gone tests dropped).
    Import(ImportArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ExportFormat {
    /// racefree's versioned format, with measurement times (merges newest-wins).
    Racefree,
    /// pytest-split's .test_durations: {"node id": seconds}.
    PytestSplit,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Output format (docs/ci.md).
    #[arg(
        long,
        value_enum,
        default_value_t = ExportFormat::Racefree,
        value_name = "racefree|pytest-split",
        hide_possible_values = true
    )]
    pub format: ExportFormat,
    /// Write to FILE instead of stdout.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Durations files, in either format; on equal measurement times the later file wins.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
}

pub fn run(args: DurationsArgs) -> miette::Result<ExitCode> {
    let cwd = std::env::current_dir()
        .map_err(|e| miette::miette!("cannot read the current directory: {e}"))?;
    let result = match args.command {
        DurationsCommand::Export(a) => export(&cwd, a),
        DurationsCommand::Import(a) => import(&cwd, a),
    };
    Ok(match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => super::sharding::usage_error("racefree durations", &e),
    })
}

fn rootdir(cwd: &Path) -> Result<PathBuf, racefree_runner::Error> {
    Ok(racefree_runner::config::determine_setup(cwd, &[])?.rootdir)
}

fn export(cwd: &Path, args: ExportArgs) -> Result<(), racefree_runner::Error> {
    let root = rootdir(cwd)?;
    let path = History::path_for(&root);
    if !path.exists() {
        return Err(racefree_runner::Error::Usage(format!(
            "no history at {}\n  fix: run `racefree run` first (history is kept per rootdir), or import a durations file",
            path.display()
        )));
    }
    let mut history = History::open(&root)?;
    let mut durations = durations_store::export(&mut history)?;
    let dropped = durations.drop_vanished(|f| root.join(f).exists());
    let format = match args.format {
        ExportFormat::Racefree => Format::Racefree,
        ExportFormat::PytestSplit => Format::PytestSplit,
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    match &args.output {
        Some(out) => {
            durations.write(&racefree_runner::config::absolute(cwd, out), format, now)?;
            eprintln!(
                "racefree: exported {} tests to {}{}",
                durations.tests.len(),
                out.display(),
                if dropped > 0 {
                    format!(" ({dropped} left out: they no longer exist)")
                } else {
                    String::new()
                }
            );
        }
        None => print!("{}", durations.render(format, now)),
    }
    Ok(())
}

fn import(cwd: &Path, args: ImportArgs) -> Result<(), racefree_runner::Error> {
    let root = rootdir(cwd)?;
    // Read every file before touching history: one bad file changes nothing.
    let mut inputs = Vec::new();
    for f in &args.files {
        inputs.push(Durations::read(&racefree_runner::config::absolute(cwd, f))?);
    }
    let merged = Durations::merge(inputs);
    let mut history = History::open(&root)?;
    let report = durations_store::import(&mut history, &merged, |f| root.join(f).exists())?;
    eprintln!(
        "racefree: imported {} file{} into {}: {} tests updated, {} kept (local measurement as new), {} dropped (file gone)",
        args.files.len(),
        if args.files.len() == 1 { "" } else { "s" },
        History::path_for(&root).display(),
        report.updated,
        report.kept,
        report.dropped
    );
    Ok(())
}
