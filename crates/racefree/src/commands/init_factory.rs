//! `racefree __init-factory` (hidden): what a fork server in namespace mode starts, before
//! it imports pytest, to make each forked unit's PID namespace and init
//! (racefree_runner::isolation::init_factory; python/racefree_unitns.py is the other side).

use std::process::ExitCode;

use clap::Args;

#[derive(Debug, Args)]
pub struct InitFactoryArgs {
    /// The factory's end of the server's SOCK_SEQPACKET socket (an inherited descriptor).
    #[arg(long, value_name = "FD")]
    pub socket: i32,

    /// The fork server's pid: the factory exits with it.
    #[arg(long, value_name = "PID")]
    pub parent: i32,

    /// A descriptor on the host's /proc, to name leaked processes by the pid racefree sees.
    #[arg(long, value_name = "FD")]
    pub host_proc: Option<i32>,
}

pub fn run(args: InitFactoryArgs) -> miette::Result<ExitCode> {
    racefree_runner::isolation::init_factory(args.socket, args.host_proc, args.parent).map_err(
        |e| {
            miette::miette!(
                "racefree {}: {e}",
                racefree_runner::isolation::FACTORY_SUBCOMMAND
            )
        },
    )?;
    Ok(ExitCode::SUCCESS)
}
