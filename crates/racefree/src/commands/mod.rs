//! One module per subcommand. Each exposes an `Args` struct (clap) and a `run` function that
//! returns the process exit code, or a `miette` report for racefree's own errors.

pub mod audit;
pub mod clean;
pub mod durations;
pub mod history;
pub mod init_factory;
pub mod lock;
pub mod plan;
pub mod run;
pub mod sharding;
pub mod unit_init;

/// Exit code for racefree's own (internal) errors, as pytest uses 3 for internal errors.
pub const EXIT_INTERNAL: u8 = 3;

/// Exit code for usage errors (bad arguments, missing paths, invalid configuration), as pytest's 4.
pub const EXIT_USAGE: u8 = 4;
