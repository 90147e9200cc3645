//! The CI sharding options `racefree run` and `racefree plan` share, and their resolution:
//! the shard from the flag or the CI environment, `--files-from` into paths.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use racefree_runner::shard::ShardSpec;
use racefree_runner::sharding::{self, ShardOptions};

#[derive(Debug, Args)]
pub struct DurationsFileArgs {
    /// Plan from this durations file.
    #[arg(long, value_name = "FILE")]
    pub durations_file: Option<PathBuf>,

    /// A bad --durations-file is only a warning.
    #[arg(long, requires = "durations_file")]
    pub durations_file_optional: bool,
}

#[derive(Debug, Args)]
pub struct ShardArgs {
    /// Run shard K of N [default: from CI variables].
    #[arg(long, value_name = "K/N", conflicts_with = "last_failed")]
    pub shard: Option<String>,

    /// Run exactly the test files listed in FILE.
    #[arg(long, value_name = "FILE", conflicts_with = "paths")]
    pub files_from: Option<PathBuf>,

    #[command(flatten)]
    pub durations: DurationsFileArgs,
}

impl DurationsFileArgs {
    pub fn options(&self) -> ShardOptions {
        ShardOptions {
            shard: None,
            durations_file: self.durations_file.clone(),
            durations_file_optional: self.durations_file_optional,
        }
    }
}

impl ShardArgs {
    /// The paths to run and the sharding options, or None when an empty --files-from leaves
    /// nothing to run (said on stdout; the run then exits 5, as an empty shard does). The CI
    /// environment's shard variables are ignored with --files-from: such a list is already
    /// one machine's share.
    pub fn resolve(
        &self,
        paths: Vec<String>,
        cwd: &Path,
    ) -> Result<Option<(Vec<String>, ShardOptions)>, racefree_runner::Error> {
        let env = |name: &str| std::env::var(name).ok();
        let shard = if self.files_from.is_some() {
            ShardSpec::resolve(self.shard.as_deref(), |_| None)?
        } else {
            ShardSpec::resolve(self.shard.as_deref(), env)?
        };
        let paths = match &self.files_from {
            Some(list) => sharding::read_files_from(list, cwd)?,
            None => paths,
        };
        if let Some(list) = &self.files_from
            && paths.is_empty()
        {
            // No paths would mean "everything": an empty list must not run the whole suite.
            println!(
                "racefree: --files-from {} lists no files: nothing to run",
                list.display()
            );
            return Ok(None);
        }
        let mut options = self.durations.options();
        options.shard = shard;
        Ok(Some((paths, options)))
    }
}

/// Prints a usage error the way `racefree run` prints its errors and returns its exit code.
pub fn usage_error(command: &str, e: &racefree_runner::Error) -> ExitCode {
    eprintln!("{:?}", miette::Report::msg(format!("{command}: {e}")));
    ExitCode::from(e.exit_code())
}
