//! Errors that stop an audit before it starts (bad paths). Per-file problems are not errors:
//! they become `FileError` entries in the report so one bad file does not hide the rest.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("path `{}` does not exist; pass an existing file or directory (or none, to use testpaths)", path.display())]
    NotFound { path: PathBuf },
    #[error("cannot read `{}`: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}
