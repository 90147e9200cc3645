//! `racefree __unit-init` (hidden): what the executor starts instead of python when a run
//! uses namespace isolation. It must run before racefree starts any thread, which is why it
//! is a subcommand of the CLI rather than code inside the runner (see
//! racefree_runner::isolation).

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use racefree_runner::isolation::{InitOptions, unit_init};

#[derive(Debug, Args)]
pub struct UnitInitArgs {
    /// A new network namespace with only loopback, brought up.
    #[arg(long)]
    pub private_network: bool,

    /// A path to bind back in if it lies under /tmp, /dev/shm or /var/tmp (repeatable).
    #[arg(long, value_name = "PATH")]
    pub keep: Vec<PathBuf>,

    /// The command is a fork server, which makes each unit's namespaces itself: it gets the
    /// host's /proc and racefree's executable (descriptors named in RACEFREE_HOST_PROC_FD and
    /// RACEFREE_INIT_FACTORY_EXE_FD, for its init factory) and keeps CAP_SYS_ADMIN.
    #[arg(long)]
    pub fork_server: bool,

    /// Set everything up, run nothing, and exit 0 if that worked.
    #[arg(long)]
    pub probe: bool,

    /// The command, after `--`.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

pub fn run(args: UnitInitArgs) -> miette::Result<ExitCode> {
    if args.command.is_empty() && !args.probe {
        return Err(miette::miette!(
            "racefree __unit-init: give the command to run after `--`"
        ));
    }
    let code = unit_init(&InitOptions {
        command: args.command,
        keep: args.keep,
        private_network: args.private_network,
        probe: args.probe,
        fork_server: args.fork_server,
    });
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(u8::MAX)))
}
