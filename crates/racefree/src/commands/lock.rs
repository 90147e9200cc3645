//! `racefree lock`: run a command while holding a cross-process lock.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

#[derive(Debug, Args)]
pub struct LockArgs {
    /// The lock file.
    pub path: PathBuf,
}

pub fn run(args: LockArgs) -> miette::Result<ExitCode> {
    Err(miette::miette!(
        "racefree lock {}: not built yet",
        args.path.display()
    ))
}
