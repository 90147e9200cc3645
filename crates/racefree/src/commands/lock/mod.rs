//! `racefree lock`: run a command while holding a cross-process lock (flock(1)-compatible where
//! it makes sense), and inspect or break locks.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};

mod hold;
mod inspect;

/// Exit codes of `racefree lock` for its own errors (the child's status passes through
/// unchanged otherwise). sysexits(3) values, as flock(1) uses, so they rarely collide with a
/// command's own codes. Documented in docs/lock.md.
pub mod exit {
    /// The lock is held by someone else (`-n`, or `-w` ran out); `-E` changes it.
    pub const CONFLICT: u8 = 1;
    /// The lock path cannot be used (missing directory, symlink, not a regular file, foreign
    /// content, untrusted filesystem).
    pub const BAD_PATH: u8 = 66;
    /// An operating-system error while locking or supervising.
    pub const OS_ERROR: u8 = 71;
    /// The command could not be run (not executable).
    pub const CANNOT_EXECUTE: u8 = 126;
    /// The command was not found.
    pub const NOT_FOUND: u8 = 127;
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct LockArgs {
    #[command(subcommand)]
    pub action: Option<LockAction>,

    #[command(flatten)]
    pub hold: HoldArgs,
}

#[derive(Debug, Subcommand)]
pub enum LockAction {
    /// Show who holds a lock (the holder record and whether the holder is alive).
    Status {
        /// The lock file.
        path: PathBuf,
        /// Print the status as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Break a soft lock whose holder is provably dead (or whose lease expired).
    Break {
        /// The lock file.
        path: PathBuf,
        /// Break it even if the holder may be alive (loudly; you take the blame).
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// Kernel locks on local filesystems, soft locks with a lease on network/FUSE ones.
    Auto,
    /// flock(2) on a lock file that is never unlinked.
    Kernel,
    /// An atomically published holder record (for NFS/SMB; exclusive only).
    Soft,
}

#[derive(Debug, Args)]
pub struct HoldArgs {
    /// Take a shared lock (many shared holders, no exclusive one).
    #[arg(short = 's', long = "shared", conflicts_with = "exclusive")]
    pub shared: bool,

    /// Take an exclusive lock (the default).
    #[arg(short = 'x', long = "exclusive")]
    pub exclusive: bool,

    /// Fail at once if the lock is held (exit 1, or the -E code).
    #[arg(short = 'n', long = "nonblock", conflicts_with = "timeout")]
    pub nonblock: bool,

    /// Wait at most SECS seconds (fractions allowed), then fail like -n.
    #[arg(short = 'w', long = "timeout", value_name = "SECS", value_parser = parse_seconds)]
    pub timeout: Option<std::time::Duration>,

    /// Exit code when the lock is held by someone else.
    #[arg(short = 'E', long = "conflict-exit-code", value_name = "CODE", default_value_t = exit::CONFLICT)]
    pub conflict_exit_code: u8,

    /// How to lock.
    #[arg(
        long,
        value_enum,
        default_value_t = ModeArg::Auto,
        value_name = "auto|kernel|soft",
        hide_possible_values = true
    )]
    pub mode: ModeArg,

    /// Soft mode: other hosts may evict a holder silent for SECS.
    #[arg(long, value_name = "SECS", value_parser = parse_seconds)]
    pub lease: Option<std::time::Duration>,

    /// Use --mode even where it cannot be trusted (kernel locks on NFS).
    #[arg(long)]
    pub trust_filesystem: bool,

    /// Run this shell command (with `sh -c`) instead of COMMAND.
    #[arg(
        short = 'c',
        long = "command",
        value_name = "SHELL_COMMAND",
        conflicts_with = "argv"
    )]
    pub shell_command: Option<String>,

    /// The lock file (created if missing; symlinks refused; never truncated).
    #[arg(required = true)]
    pub path: Option<PathBuf>,

    /// The command to run while holding the lock (`--` before it is optional).
    #[arg(
        value_name = "COMMAND",
        id = "argv",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub argv: Vec<OsString>,
}

fn parse_seconds(s: &str) -> Result<std::time::Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number of seconds (examples: 5, 0.5)"))?;
    std::time::Duration::try_from_secs_f64(secs)
        .map_err(|_| format!("`{s}` must be a finite number of seconds, 0 or more"))
}

pub fn run(args: LockArgs) -> miette::Result<ExitCode> {
    match args.action {
        Some(LockAction::Status { path, json }) => inspect::status(&path, json),
        Some(LockAction::Break { path, force }) => inspect::break_lock(&path, force),
        None => hold::run(args.hold),
    }
}
