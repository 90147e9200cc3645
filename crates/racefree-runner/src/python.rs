//! Choosing the Python interpreter, and checking that pytest imports there (or, for fork
//! servers, which import it themselves, only that it is there).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{Error, Result};

/// Where an interpreter named explicitly came from, for messages: the flag, or the
/// configuration file (a relative path is the directory racefree started in's, either way).
pub enum Named<'a> {
    Flag(&'a Path),
    Config { path: &'a Path, file: &'a Path },
}

/// `--python` (or `python` in `[tool.racefree]`), else `$VIRTUAL_ENV`, else `./.venv`,
/// else `python3` on PATH.
pub fn resolve(explicit: Option<Named>, cwd: &Path) -> Result<PathBuf> {
    if let Some(named) = explicit {
        let (p, source) = match named {
            Named::Flag(p) => (crate::config::absolute(cwd, p), "--python".to_string()),
            Named::Config { path, file } => (
                crate::config::absolute(cwd, path),
                format!("`python` in [tool.racefree] of {}", file.display()),
            ),
        };
        let fix = "pass the path of a Python interpreter";
        return match std::fs::metadata(&p) {
            Ok(meta) if meta.is_dir() => Err(Error::Usage(format!(
                "{source} {}: is a directory; {fix} (such as {}/bin/python)",
                p.display(),
                p.display()
            ))),
            Ok(_) => Ok(p),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::Usage(format!(
                "{source} {}: no such file; {fix}",
                p.display()
            ))),
            Err(e) => Err(Error::Usage(format!(
                "{source} {}: {e}; {fix}",
                p.display()
            ))),
        };
    }
    if let Some(venv) = std::env::var_os("VIRTUAL_ENV").filter(|v| !v.is_empty()) {
        let p = PathBuf::from(&venv).join("bin").join("python");
        if p.exists() {
            return Ok(p);
        }
        // A virtualenv deleted or moved while still "active": say so, rather than let
        // another interpreter run the tests without a word.
        eprintln!(
            "racefree: warning: $VIRTUAL_ENV is {} but {} does not exist; looking for ./.venv, then python3 on PATH (pass --python to choose)",
            PathBuf::from(venv).display(),
            p.display()
        );
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

/// What racefree learns from the interpreter when it checks that pytest imports.
#[derive(Debug, Clone, Default)]
pub struct PythonInfo {
    pub pytest_version: String,
    /// Seconds the check took (an interpreter start-up plus `import pytest`).
    pub import_secs: f64,
    /// Directories the interpreter needs: its real executable's, its prefixes and `sys.path`.
    /// Namespace isolation binds them back when they lie under a private /tmp (a virtualenv
    /// in /tmp, or a wrapper script pointing there).
    pub paths: Vec<PathBuf>,
}

/// Where the interpreter lives: its real executable's directory, its prefixes and
/// `sys.path` (what `import pytest` adds nothing to).
const PATHS_EXPR: &str = "[os.path.dirname(os.path.realpath(sys.executable)), sys.prefix, \
    sys.base_prefix, sys.exec_prefix] + [p for p in sys.path if p]";

/// Checks that `python` can import pytest, and asks it where it lives.
pub fn check_pytest(python: &Path) -> Result<PythonInfo> {
    let script = format!(
        "import json, os, sys, pytest\n\
         sys.stdout.write(json.dumps({{'version': pytest.__version__, 'paths': {PATHS_EXPR}}}))"
    );
    let start = std::time::Instant::now();
    let answer = ask(python, &script)?;
    Ok(PythonInfo {
        pytest_version: answer.version.unwrap_or_default(),
        import_secs: start.elapsed().as_secs_f64(),
        paths: answer.paths,
    })
}

/// Where `python` lives (see `PythonInfo::paths`), and that it can find pytest, without
/// importing it: fork servers import pytest themselves as they warm up, and a second
/// interpreter importing it beside them would only take their CPU. If a pytest that is found
/// fails to import, no server says it imported it, and `check_pytest` then tells why.
pub fn interpreter_paths(python: &Path) -> Result<Vec<PathBuf>> {
    let script = format!(
        "import importlib.util, json, os, sys\n\
         if importlib.util.find_spec('pytest') is None:\n    \
             sys.exit(\"ModuleNotFoundError: No module named 'pytest'\")\n\
         sys.stdout.write(json.dumps({{'paths': {PATHS_EXPR}}}))"
    );
    Ok(ask(python, &script)?.paths)
}

/// The last line of a Python process's stderr that says something (its exception, when
/// it died of one).
pub(crate) fn last_line(stderr: &[u8]) -> Option<String> {
    String::from_utf8_lossy(stderr)
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| l.trim().to_string())
}

#[derive(serde::Deserialize)]
struct Answer {
    #[serde(default)]
    version: Option<String>,
    paths: Vec<PathBuf>,
}

/// Runs `script` in `python` and reads its JSON answer, with its paths made directories.
fn ask(python: &Path, script: &str) -> Result<Answer> {
    let out = Command::new(python)
        .args(["-c", script])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::NoPytest {
            python: python.to_path_buf(),
            detail: format!("cannot start it: {e}"),
        })?;
    if !out.status.success() {
        let detail = last_line(&out.stderr).unwrap_or_else(|| "import failed".to_string());
        return Err(Error::NoPytest {
            python: python.to_path_buf(),
            detail,
        });
    }
    let mut answer: Answer = serde_json::from_slice(&out.stdout).map_err(|e| Error::NoPytest {
        python: python.to_path_buf(),
        detail: format!(
            "unexpected answer {:?}: {e}",
            String::from_utf8_lossy(&out.stdout)
        ),
    })?;
    let mut paths: Vec<PathBuf> = std::mem::take(&mut answer.paths)
        .into_iter()
        .map(|p| {
            if p.is_file() {
                p.parent().map(Path::to_path_buf).unwrap_or(p)
            } else {
                p
            }
        })
        .filter(|p| p.is_absolute() && p.is_dir())
        .collect();
    paths.sort();
    paths.dedup();
    answer.paths = paths;
    Ok(answer)
}
