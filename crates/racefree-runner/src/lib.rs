//! The engine of `racefree run`: a parallel pytest runner that gives exactly pytest's
//! results, sooner.
//!
//! Pipeline (DESIGN §1): discovery and the planner decide what runs in which units; the
//! dispatcher owns the run state and hands units to worker slots; one executor per running
//! unit spawns and watches its pytest process; every observable fact becomes an `Event` that
//! the consumers in `report/` and the history store receive in order.

pub mod config;
pub mod coverage;
pub mod discovery;
pub mod dispatch;
pub mod durations;
pub mod durations_store;
pub mod error;
pub mod events;
pub mod executor;
pub mod fnmatch;
pub mod forkserver;
pub mod history;
pub mod import_names;
pub mod isolation;
pub mod passthrough;
pub mod plan;
pub mod procs;
pub mod pytest_argv;
pub mod python;
pub mod recorder;
pub mod recovery;
pub mod report;
pub mod session;
pub mod shard;
pub mod sharding;
#[cfg(unix)]
pub mod unix;

mod run;

pub use error::{Error, Result};
pub use run::{ProgressMode, RunRequest, run};
