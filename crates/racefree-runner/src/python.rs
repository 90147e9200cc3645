//! Choosing the Python interpreter and checking that pytest imports there.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{Error, Result};

/// `--python` (or `python` in `[tool.racefree]`), else `$VIRTUAL_ENV`, else `./.venv`,
/// else `python3` on PATH.
pub fn resolve(explicit: Option<&Path>, cwd: &Path) -> Result<PathBuf> {
    if let Some(p) = explicit {
        let p = crate::config::absolute(cwd, p);
        if !p.exists() {
            return Err(Error::Usage(format!(
                "--python {}: no such file; pass the path of a Python interpreter",
                p.display()
            )));
        }
        return Ok(p);
    }
    if let Some(venv) = std::env::var_os("VIRTUAL_ENV").filter(|v| !v.is_empty()) {
        let p = PathBuf::from(venv).join("bin").join("python");
        if p.exists() {
            return Ok(p);
        }
    }
    let local = cwd.join(".venv").join("bin").join("python");
    if local.exists() {
        return Ok(local);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("python3"))
        .find(|p| p.is_file())
        .ok_or(Error::NoPython)
}

/// Imports pytest with the interpreter; returns its version and how long that took (a
/// floor for a unit's start-up on this machine), or a clear error.
pub fn check_pytest(python: &Path) -> Result<(String, f64)> {
    let start = std::time::Instant::now();
    let out = Command::new(python)
        .args([
            "-c",
            "import pytest, sys; sys.stdout.write(pytest.__version__)",
        ])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::NoPytest {
            python: python.to_path_buf(),
            detail: format!("cannot start it: {e}"),
        })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let detail = stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("import failed")
            .trim()
            .to_string();
        return Err(Error::NoPytest {
            python: python.to_path_buf(),
            detail,
        });
    }
    Ok((
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        start.elapsed().as_secs_f64(),
    ))
}
