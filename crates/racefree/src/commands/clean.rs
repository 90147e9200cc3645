//! `racefree clean`: remove what dead runs left behind, judged by owner liveness, never by age.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use racefree_runner::session;

#[derive(Debug, Args)]
pub struct CleanArgs {
    /// Only show what would be removed.
    #[arg(long)]
    pub dry_run: bool,
}

pub fn run(args: CleanArgs) -> miette::Result<ExitCode> {
    // Session roots live under /dev/shm when it is a writable tmpfs, else the temp dir; a run
    // started with another TMPDIR may have used the latter, so look in both.
    let mut bases: Vec<PathBuf> = vec![session::base_dir(), std::env::temp_dir()];
    bases.dedup();
    let mut removed = 0;
    for base in bases {
        let swept = session::sweep(&base, None, args.dry_run)
            .map_err(|e| miette::miette!("racefree clean: {e}"))?;
        for dir in &swept.dead {
            let verb = if args.dry_run {
                "would remove"
            } else {
                "removed"
            };
            println!("{verb} {} (its run is dead)", dir.display());
        }
        for dir in &swept.live {
            println!("kept {} (its run is alive)", dir.display());
        }
        removed += swept.dead.len();
    }
    if removed == 0 {
        println!("nothing to clean");
    }
    Ok(ExitCode::SUCCESS)
}
