//! The engine's errors. Each names the file, flag or value at fault and says how to fix it;
//! the CLI renders them with miette and maps them to pytest-style exit codes.

use std::path::PathBuf;

/// Exit codes, as pytest uses them (DESIGN §2.1).
pub mod exit {
    pub const OK: u8 = 0;
    pub const TESTS_FAILED: u8 = 1;
    pub const INTERRUPTED: u8 = 2;
    pub const INTERNAL: u8 = 3;
    pub const USAGE: u8 = 4;
    pub const NO_TESTS: u8 = 5;
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {message}", path.display())]
    Config { path: PathBuf, message: String },

    #[error("{0}")]
    Usage(String),

    #[error(
        "file or directory not found: {} (paths and node ids are resolved against the current directory {})",
        path.display(),
        cwd.display()
    )]
    PathNotFound { path: PathBuf, cwd: PathBuf },

    #[error(
        "pytest cannot be imported by {}: {detail}\n  fix: install it there (`{} -m pip install pytest`) or pick another interpreter with --python PATH",
        python.display(),
        python.display()
    )]
    NoPytest { python: PathBuf, detail: String },

    #[error(
        "no Python interpreter found: tried --python, $VIRTUAL_ENV, ./.venv and python3 on PATH; pass --python PATH"
    )]
    NoPython,

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    #[error("history database {}: {source}{}", path.display(), history_hint(source))]
    History {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
}

/// What to do about a history error, for a damaged store only: a busy or read-only one
/// is not fixed by deleting it.
fn history_hint(source: &rusqlite::Error) -> &'static str {
    match source.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase) => {
            " (history only speeds runs up: delete the file to start afresh, or pass --no-history)"
        }
        _ => "",
    }
}

impl Error {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// The exit code this error ends a run with: the user's mistakes are usage errors (4),
    /// everything else is racefree's own trouble (3).
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Config { .. }
            | Error::Usage(_)
            | Error::PathNotFound { .. }
            | Error::NoPytest { .. }
            | Error::NoPython => exit::USAGE,
            Error::Io { .. } | Error::History { .. } => exit::INTERNAL,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
