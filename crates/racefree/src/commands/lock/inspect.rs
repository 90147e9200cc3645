//! `racefree lock status` and `racefree lock break`.

use std::path::Path;
use std::process::ExitCode;

use miette::IntoDiagnostic;
use racefree_lock::{BreakOutcome, HoldState, LivenessView, LockError};

use super::exit;

pub fn status(path: &Path, json: bool) -> miette::Result<ExitCode> {
    let status = match racefree_lock::holder(path) {
        Ok(s) => s,
        Err(e) => return Ok(report(&e)),
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&status).into_diagnostic()?
        );
        return Ok(ExitCode::SUCCESS);
    }
    let mode = status.mode.map(|m| m.as_str()).unwrap_or("none");
    match status.state {
        HoldState::Free => println!("{}: free ({mode} lock)", path.display()),
        HoldState::Shared => println!("{}: held shared ({mode} lock)", path.display()),
        HoldState::Exclusive if status.malformed => println!(
            "{}: held, but the record is malformed (it is evicted after a 2 s grace)",
            path.display()
        ),
        HoldState::Exclusive => {
            let who = status
                .record
                .as_ref()
                .map(|r| r.describe())
                .unwrap_or_else(|| "an unknown holder".to_owned());
            let alive = match &status.liveness {
                Some(LivenessView::Alive) => "alive".to_owned(),
                Some(LivenessView::Dead(why)) => format!("dead: {why}"),
                Some(LivenessView::Unknown(why)) => format!("unknown: {why}"),
                None => "unknown".to_owned(),
            };
            println!(
                "{}: held exclusively ({mode} lock) by {who} [{alive}]",
                path.display()
            );
        }
    }
    if status.state == HoldState::Free
        && let Some(r) = &status.record
    {
        println!("  last exclusive holder: {}", r.describe());
    }
    Ok(ExitCode::SUCCESS)
}

pub fn break_lock(path: &Path, force: bool) -> miette::Result<ExitCode> {
    let outcome = if force {
        racefree_lock::force_break(path)
    } else {
        racefree_lock::break_stale(path)
    };
    match outcome {
        Ok(BreakOutcome::NotHeld) => {
            println!("{}: not held; nothing to break", path.display());
            Ok(ExitCode::SUCCESS)
        }
        Ok(BreakOutcome::Broken { record, reason }) => {
            let who = record
                .map(|r| r.describe())
                .unwrap_or_else(|| "a malformed record".to_owned());
            if force {
                eprintln!(
                    "racefree lock: FORCE-BROKE {}: removed {who}; if that holder is alive, two holders may now run at once",
                    path.display()
                );
            } else {
                println!("{}: broke stale lock of {who} ({reason})", path.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e @ LockError::NotStale { .. }) => {
            eprintln!("racefree lock: {e}");
            Ok(ExitCode::from(exit::CONFLICT))
        }
        Err(e) => Ok(report(&e)),
    }
}

/// Prints a lock error and maps it to its documented exit code.
pub fn report(e: &LockError) -> ExitCode {
    eprintln!("racefree lock: {e}");
    ExitCode::from(error_code(e))
}

pub fn error_code(e: &LockError) -> u8 {
    match e {
        LockError::WouldBlock { .. } | LockError::Cancelled { .. } | LockError::NotStale { .. } => {
            exit::CONFLICT
        }
        LockError::MissingParent { .. }
        | LockError::NotRegularFile { .. }
        | LockError::Symlink { .. }
        | LockError::ForeignContent { .. }
        | LockError::OversizedRecord { .. }
        | LockError::ModeMismatch { .. }
        | LockError::UntrustedFilesystem { .. }
        | LockError::Unsupported { .. }
        | LockError::WouldDeadlock { .. } => exit::BAD_PATH,
        _ => exit::OS_ERROR,
    }
}
