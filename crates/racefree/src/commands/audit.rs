//! `racefree audit`: find tests that are unsafe in parallel. This module only parses arguments,
//! loads `[tool.racefree.audit]` and pytest's `testpaths`, calls racefree-audit and renders.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use miette::{Diagnostic, LabeledSpan, NamedSource};
use racefree_audit::report::{human, json, sarif};
use racefree_audit::{AuditConfig, FailOn, Settings, discover, project};
use serde::Deserialize;

use super::EXIT_USAGE;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Human,
    Json,
    Sarif,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FailLevel {
    Error,
    Warning,
    Info,
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

/// Find tests that are unsafe in parallel: writes to shared paths, fixed ports, unrestored
/// global state.
#[derive(Debug, Args)]
#[command(
    after_help = "Exit codes: 0 no finding at or above --fail-on; 1 a finding reaches it; \
4 usage error (missing path, bad flag value, invalid [tool.racefree.audit]).\n\
Suppress one finding with a `# racefree: ignore[RF001]` comment. Rules and config: docs/audit.md"
)]
pub struct AuditArgs {
    /// Files or directories to audit. Default: `paths` from [tool.racefree.audit], else pytest's
    /// `testpaths`, else the current directory.
    pub paths: Vec<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
    /// Exit 1 when a finding is at least this severe [default: warning, or `fail-on` from the config].
    #[arg(long, value_enum, value_name = "SEVERITY")]
    pub fail_on: Option<FailLevel>,
    /// Write the report to this file instead of standard output.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// The pyproject.toml to read [tool.racefree.audit] from [default: the nearest one upwards].
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Colour in the human format: auto (a terminal, and NO_COLOR unset), always or never.
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
    /// Threads that parse and analyze files.
    #[arg(long, short = 'j', default_value_t = 1, value_name = "N")]
    pub jobs: usize,
}

/// Only the parts of pyproject.toml audit reads; everything else is left to its owners.
#[derive(Debug, Default, Deserialize)]
struct Pyproject {
    #[serde(default)]
    tool: Tool,
}

#[derive(Debug, Default, Deserialize)]
struct Tool {
    #[serde(default)]
    racefree: Racefree,
    pytest: Option<PytestTool>,
}

#[derive(Debug, Default, Deserialize)]
struct Racefree {
    audit: Option<AuditConfig>,
}

#[derive(Debug, Default, Deserialize)]
struct PytestTool {
    /// pytest 9 native table.
    testpaths: Option<StringOrList>,
    ini_options: Option<IniOptions>,
}

#[derive(Debug, Default, Deserialize)]
struct IniOptions {
    testpaths: Option<StringOrList>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum StringOrList {
    One(String),
    Many(Vec<String>),
}

impl StringOrList {
    fn to_vec(&self) -> Vec<String> {
        match self {
            StringOrList::One(s) => s.split_whitespace().map(str::to_owned).collect(),
            StringOrList::Many(v) => v.clone(),
        }
    }
}

/// A usage error: printed as a diagnostic, exit 4.
#[derive(Debug, thiserror::Error, Diagnostic)]
#[error("{message}")]
struct UsageError {
    message: String,
    #[help]
    help: Option<String>,
    #[source_code]
    source_code: Option<NamedSource<String>>,
    #[label(collection)]
    labels: Vec<LabeledSpan>,
}

impl UsageError {
    fn new(message: impl Into<String>, help: impl Into<String>) -> Self {
        UsageError {
            message: message.into(),
            help: Some(help.into()),
            source_code: None,
            labels: Vec::new(),
        }
    }
}

struct Loaded {
    /// Directory of the pyproject.toml, if one was found.
    dir: Option<PathBuf>,
    pyproject: Pyproject,
}

fn load_pyproject(explicit: Option<&Path>) -> Result<Loaded, Box<UsageError>> {
    let path = match explicit {
        Some(p) if !p.is_file() => {
            return Err(Box::new(UsageError::new(
                format!("config file `{}` does not exist", p.display()),
                "pass the path of a pyproject.toml with --config, or leave --config out to use the nearest one",
            )));
        }
        Some(p) => Some(p.to_path_buf()),
        None => std::env::current_dir().ok().and_then(|cwd| {
            cwd.ancestors()
                .map(|d| d.join("pyproject.toml"))
                .find(|p| p.is_file())
        }),
    };
    let Some(path) = path else {
        return Ok(Loaded {
            dir: None,
            pyproject: Pyproject::default(),
        });
    };
    let text = std::fs::read_to_string(&path).map_err(|e| {
        Box::new(UsageError::new(
            format!("cannot read `{}`: {e}", path.display()),
            "check the file's permissions",
        ))
    })?;
    let pyproject: Pyproject = toml::from_str(&text).map_err(|e| {
        let labels = e.span().map(|s| LabeledSpan::at(s, "here")).into_iter().collect();
        Box::new(UsageError {
            message: format!("invalid configuration in `{}`: {}", path.display(), e.message().trim()),
            help: Some(
                "[tool.racefree.audit] accepts: paths, disable, shared-roots, severity, fail-on (see docs/audit.md)".into(),
            ),
            source_code: Some(NamedSource::new(path.display().to_string(), text.clone())),
            labels,
        })
    })?;
    let dir = path.parent().map(|d| {
        if d.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            d.to_path_buf()
        }
    });
    Ok(Loaded { dir, pyproject })
}

/// Makes `p` (relative to `base`) a path relative to the current directory when possible.
fn under(base: &Path, p: &str) -> PathBuf {
    let joined = base.join(p);
    std::env::current_dir()
        .ok()
        .and_then(|cwd| joined.strip_prefix(&cwd).ok().map(Path::to_path_buf))
        .map(|rel| {
            if rel.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                rel
            }
        })
        .unwrap_or(joined)
}

/// pytest's `testpaths`, from the first config file pytest itself would pick: walking up from
/// the current directory, `pytest.ini`, then pyproject.toml with a pytest table, then `tox.ini`
/// with `[pytest]`, then `setup.cfg` with `[tool:pytest]`.
fn testpaths(loaded: &Loaded) -> Option<Vec<PathBuf>> {
    let cwd = std::env::current_dir().ok()?;
    let pyproject_dir = loaded
        .dir
        .as_ref()
        .and_then(|d| std::fs::canonicalize(d).ok());
    for dir in cwd.ancestors() {
        for (i, (name, section)) in project::INI_FILES.iter().enumerate() {
            if i == 1 && pyproject_dir.as_deref() == Some(dir) {
                if let Some(pytest) = &loaded.pyproject.tool.pytest {
                    let tp = pytest
                        .ini_options
                        .as_ref()
                        .and_then(|o| o.testpaths.as_ref())
                        .or(pytest.testpaths.as_ref());
                    return tp.map(|t| t.to_vec().iter().map(|p| under(dir, p)).collect());
                }
            }
            let Ok(text) = std::fs::read_to_string(dir.join(name)) else {
                continue;
            };
            if *name == "pytest.ini" || project::ini_has_section(&text, section) {
                return project::ini_testpaths(&text, section)
                    .map(|v| v.iter().map(|p| under(dir, p)).collect());
            }
        }
    }
    None
}

fn usage(err: UsageError) -> miette::Result<ExitCode> {
    eprintln!("{:?}", miette::Report::new(err));
    Ok(ExitCode::from(EXIT_USAGE))
}

pub fn run(args: AuditArgs) -> miette::Result<ExitCode> {
    let loaded = match load_pyproject(args.config.as_deref()) {
        Ok(l) => l,
        Err(e) => return usage(*e),
    };
    let config_path = loaded.dir.as_ref().map_or_else(
        || "pyproject.toml".into(),
        |d| d.join("pyproject.toml").display().to_string(),
    );
    let config = loaded
        .pyproject
        .tool
        .racefree
        .audit
        .clone()
        .unwrap_or_default();
    let settings = match Settings::from_config(&config) {
        Ok(s) => s,
        Err(e) => {
            return usage(UsageError::new(
                format!("invalid [tool.racefree.audit] in `{config_path}`: {e}"),
                "fix the value in pyproject.toml (see docs/audit.md for every key)",
            ));
        }
    };
    let fail_on = match (args.fail_on, &config.fail_on) {
        (Some(FailLevel::Error), _) => FailOn::AtLeast(racefree_audit::Severity::Error),
        (Some(FailLevel::Warning), _) => FailOn::AtLeast(racefree_audit::Severity::Warning),
        (Some(FailLevel::Info), _) => FailOn::AtLeast(racefree_audit::Severity::Info),
        (Some(FailLevel::Never), _) => FailOn::Never,
        // Already validated by Settings::from_config.
        (None, Some(text)) => FailOn::parse(text).unwrap_or(FailOn::DEFAULT),
        (None, None) => FailOn::DEFAULT,
    };
    if args.jobs == 0 {
        return usage(UsageError::new(
            "--jobs must be at least 1",
            "pass --jobs 1 to audit on one thread",
        ));
    }

    let paths = if !args.paths.is_empty() {
        args.paths.clone()
    } else if let (Some(paths), Some(dir)) = (&config.paths, &loaded.dir) {
        paths.iter().map(|p| under(dir, p)).collect()
    } else {
        // Like pytest, testpaths that do not exist are skipped.
        let existing: Vec<PathBuf> = testpaths(&loaded)
            .unwrap_or_default()
            .into_iter()
            .filter(|p| p.exists())
            .collect();
        if existing.is_empty() {
            vec![PathBuf::from(".")]
        } else {
            existing
        }
    };
    let files = match discover::discover(&paths) {
        Ok(f) => f,
        Err(e) => {
            return usage(UsageError::new(
                e.to_string(),
                "run `racefree audit --help` for the accepted arguments",
            ));
        }
    };
    let report = racefree_audit::audit_files(&files, &settings, args.jobs);

    let rendered = match args.format {
        Format::Json => {
            json::render(&report).map_err(|e| miette::miette!("cannot encode JSON: {e}"))?
        }
        Format::Sarif => {
            sarif::render(&report).map_err(|e| miette::miette!("cannot encode SARIF: {e}"))?
        }
        Format::Human => {
            let color = match args.color {
                ColorChoice::Always => true,
                ColorChoice::Never => false,
                ColorChoice::Auto => {
                    args.output.is_none()
                        && std::io::stdout().is_terminal()
                        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
                }
            };
            let mut buf = Vec::new();
            human::render(&report, human::HumanOptions { color }, &mut buf)
                .map_err(|e| miette::miette!("cannot render the report: {e}"))?;
            String::from_utf8_lossy(&buf).into_owned()
        }
    };
    match &args.output {
        Some(path) => {
            let text = if rendered.ends_with('\n') {
                rendered
            } else {
                rendered + "\n"
            };
            if let Err(e) = std::fs::write(path, text) {
                return usage(UsageError::new(
                    format!("cannot write the report to `{}`: {e}", path.display()),
                    "pass a writable path to --output, or leave it out to print to standard output",
                ));
            }
        }
        None => {
            let mut out = std::io::stdout().lock();
            let written = if rendered.ends_with('\n') {
                write!(out, "{rendered}")
            } else {
                writeln!(out, "{rendered}")
            };
            // A closed pipe (`racefree audit | head`) is not an error worth reporting.
            if let Err(e) = written.and_then(|()| out.flush())
                && e.kind() != std::io::ErrorKind::BrokenPipe
            {
                return Err(miette::miette!("cannot write the report: {e}"));
            }
        }
    }
    Ok(if fail_on.fails(report.worst()) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
