//! Configuration: pytest's rootdir and config-file resolution (so racefree finds the same
//! `testpaths`, `python_files`, ... that pytest would use), and racefree's own options from
//! `[tool.racefree]` in pyproject.toml.
//!
//! The rootdir rules follow pytest 9's documented algorithm: the common ancestor of the
//! path arguments, then the first directory upward holding a config file that has a pytest
//! section (pytest.toml, .pytest.toml, pytest.ini, .pytest.ini, pyproject.toml, tox.ini,
//! setup.cfg, in that order), else a setup.py upward, else the ancestor itself.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Deserialize;

use crate::error::{Error, Result};

/// One pytest configuration value, kept in the form it was written in.
#[derive(Debug, Clone, PartialEq)]
pub enum IniValue {
    /// INI files and `[tool.pytest.ini_options]` scalars: a string pytest splits later.
    Str(String),
    /// A list of strings (TOML arrays).
    List(Vec<String>),
    /// Any other native TOML value (pytest 9's `[tool.pytest]`); racefree reads none of them.
    Other,
}

/// Where pytest's configuration was found and what it says.
#[derive(Debug, Clone)]
pub struct PytestConfig {
    pub rootdir: PathBuf,
    pub inifile: Option<PathBuf>,
    pub values: BTreeMap<String, IniValue>,
}

impl PytestConfig {
    /// An "args"-type ini option (testpaths, python_files, ...): a list, or a string split
    /// like a shell command line, as pytest does.
    pub fn args(&self, name: &str, default: &[&str]) -> Result<Vec<String>> {
        match self.values.get(name) {
            None => Ok(default.iter().map(|s| s.to_string()).collect()),
            Some(IniValue::List(list)) => Ok(list.clone()),
            Some(IniValue::Str(text)) => shell_split(text).ok_or_else(|| Error::Config {
                path: self.inifile.clone().unwrap_or_default(),
                message: format!("option `{name}` has an unclosed quote: {text:?}"),
            }),
            Some(IniValue::Other) => Err(Error::Config {
                path: self.inifile.clone().unwrap_or_default(),
                message: format!("option `{name}` must be a list of strings"),
            }),
        }
    }

    pub fn testpaths(&self) -> Result<Vec<String>> {
        self.args("testpaths", &[])
    }
    pub fn python_files(&self) -> Result<Vec<String>> {
        self.args("python_files", &["test_*.py", "*_test.py"])
    }
    pub fn python_classes(&self) -> Result<Vec<String>> {
        self.args("python_classes", &["Test"])
    }
    pub fn python_functions(&self) -> Result<Vec<String>> {
        self.args("python_functions", &["test"])
    }
    pub fn norecursedirs(&self) -> Result<Vec<String>> {
        self.args(
            "norecursedirs",
            &[
                "*.egg",
                ".*",
                "_darcs",
                "build",
                "CVS",
                "dist",
                "node_modules",
                "venv",
                "{arch}",
            ],
        )
    }
    pub fn addopts(&self) -> Result<Vec<String>> {
        self.args("addopts", &[])
    }

    /// Sets `-o NAME=VALUE` values over the file's, in order (the last one given wins).
    pub fn apply_overrides<S: AsRef<str>>(&mut self, overrides: &[S]) -> Result<()> {
        for item in overrides {
            let item = item.as_ref();
            let Some((name, value)) = item.split_once('=') else {
                return Err(Error::Usage(format!(
                    "pytest option `-o`/`--override-ini` expects NAME=VALUE (got {item:?})"
                )));
            };
            self.values
                .insert(name.trim().to_string(), IniValue::Str(value.to_string()));
        }
        Ok(())
    }
}

/// Splits a string the way Python's `shlex.split` does for the common cases: whitespace
/// separates, single and double quotes group, backslash escapes outside single quotes.
/// Returns None on an unclosed quote.
pub fn shell_split(text: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next()? {
                        '\'' => break,
                        c => cur.push(c),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next()? {
                        '"' => break,
                        '\\' => {
                            let next = chars.next()?;
                            if !matches!(next, '"' | '\\' | '$' | '`') {
                                cur.push('\\');
                            }
                            cur.push(next);
                        }
                        c => cur.push(c),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(next) = chars.next() {
                    cur.push(next);
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    Some(out)
}

/// A minimal INI reader with iniconfig's rules: `[section]` headers, `key = value` or
/// `key: value`, continuation lines indented, comment lines starting with `#` or `;`.
pub fn parse_ini(path: &Path, text: &str) -> Result<BTreeMap<String, BTreeMap<String, String>>> {
    let mut sections: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut section: Option<String> = None;
    let mut last_key: Option<String> = None;
    for (lineno, raw) in text.lines().enumerate() {
        let line = raw.trim_end();
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
            continue;
        }
        let bad = |message: &str| Error::Config {
            path: path.to_path_buf(),
            message: format!("line {}: {message}: {raw:?}", lineno + 1),
        };
        if line.starts_with(char::is_whitespace) {
            // Continuation of the previous value.
            let (Some(sec), Some(key)) = (&section, &last_key) else {
                return Err(bad("continuation line outside of a value"));
            };
            if let Some(value) = sections.get_mut(sec).and_then(|s| s.get_mut(key)) {
                if !value.is_empty() {
                    value.push('\n');
                }
                value.push_str(trimmed);
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix('[') {
            let Some(name) = rest.strip_suffix(']') else {
                return Err(bad("section header without a closing `]`"));
            };
            section = Some(name.trim().to_string());
            sections.entry(name.trim().to_string()).or_default();
            last_key = None;
            continue;
        }
        let Some(sec) = &section else {
            return Err(bad("value outside of any [section]"));
        };
        let split = line
            .find(['=', ':'])
            .ok_or_else(|| bad("expected `key = value`"))?;
        let key = line[..split].trim().to_string();
        let value = line[split + 1..].trim().to_string();
        sections
            .entry(sec.clone())
            .or_default()
            .insert(key.clone(), value);
        last_key = Some(key);
    }
    Ok(sections)
}

const CONFIG_NAMES: [&str; 7] = [
    "pytest.toml",
    ".pytest.toml",
    "pytest.ini",
    ".pytest.ini",
    "pyproject.toml",
    "tox.ini",
    "setup.cfg",
];

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))
}

fn parse_toml(path: &Path) -> Result<toml::Table> {
    read(path)?
        .parse::<toml::Table>()
        .map_err(|e| Error::Config {
            path: path.to_path_buf(),
            message: format!("not valid TOML: {e}"),
        })
}

fn toml_values(table: &toml::Table, ini_mode: bool) -> BTreeMap<String, IniValue> {
    table
        .iter()
        .map(|(k, v)| {
            let value = match v {
                toml::Value::String(s) => IniValue::Str(s.clone()),
                toml::Value::Array(items) if items.iter().all(|i| i.is_str()) => IniValue::List(
                    items
                        .iter()
                        .filter_map(|i| i.as_str().map(str::to_string))
                        .collect(),
                ),
                other if ini_mode => IniValue::Str(other.to_string()),
                _ => IniValue::Other,
            };
            (k.clone(), value)
        })
        .collect()
}

/// Loads the pytest section of one config file: `Some` if this file is pytest's
/// configuration (pytest.ini and pytest.toml always are, even when empty).
pub fn load_config_file(path: &Path) -> Result<Option<BTreeMap<String, IniValue>>> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let ini_section = |section: &str| ini_section_values(path, section);
    match name {
        "pytest.toml" | ".pytest.toml" => {
            let doc = parse_toml(path)?;
            Ok(Some(match doc.get("pytest").and_then(|v| v.as_table()) {
                Some(t) => toml_values(t, false),
                None => BTreeMap::new(),
            }))
        }
        "pytest.ini" | ".pytest.ini" => Ok(Some(ini_section("pytest")?.unwrap_or_default())),
        "pyproject.toml" => pyproject_values(path),
        "tox.ini" => ini_section("pytest"),
        "setup.cfg" => match ini_section("tool:pytest")? {
            Some(values) => Ok(Some(values)),
            // pytest stops on it rather than read past it (its #3086).
            None if ini_section("pytest")?.is_some() => Err(Error::Config {
                path: path.to_path_buf(),
                message: "[pytest] section in setup.cfg files is no longer supported, change to [tool:pytest] instead (as pytest says)".into(),
            }),
            None => Ok(None),
        },
        _ => Ok(None),
    }
}

/// The values in one section of an INI-style file, if it has that section.
fn ini_section_values(path: &Path, section: &str) -> Result<Option<BTreeMap<String, IniValue>>> {
    let sections = parse_ini(path, &read(path)?)?;
    Ok(sections.get(section).map(|s| {
        s.iter()
            .map(|(k, v)| (k.clone(), IniValue::Str(v.clone())))
            .collect()
    }))
}

/// The pytest values of a pyproject.toml (or another .toml file named with `-c`): its
/// `[tool.pytest.ini_options]` or pytest 9's `[tool.pytest]`; None without either.
fn pyproject_values(path: &Path) -> Result<Option<BTreeMap<String, IniValue>>> {
    let doc = parse_toml(path)?;
    let Some(tool_pytest) = doc
        .get("tool")
        .and_then(|t| t.get("pytest"))
        .and_then(|t| t.as_table())
    else {
        return Ok(None);
    };
    let native: toml::Table = tool_pytest
        .iter()
        .filter(|(k, _)| *k != "ini_options")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let ini = tool_pytest.get("ini_options").and_then(|t| t.as_table());
    match (native.is_empty(), ini) {
        (false, Some(_)) => Err(Error::Config {
            path: path.to_path_buf(),
            message: "cannot use both [tool.pytest] and [tool.pytest.ini_options]; pytest rejects this too"
                .into(),
        }),
        (false, None) => Ok(Some(toml_values(&native, false))),
        (true, Some(ini)) => Ok(Some(toml_values(ini, true))),
        (true, None) => Ok(None),
    }
}

/// A rootdir, its config file and that file's pytest values.
type Located = (PathBuf, Option<PathBuf>, BTreeMap<String, IniValue>);

/// The first directory from `start` upward holding a pytest config file, with that file.
/// A pyproject.toml without a pytest table still marks a rootdir if nothing else is found.
fn locate_config(start: &Path) -> Result<Option<Located>> {
    let mut bare_pyproject: Option<PathBuf> = None;
    for base in start.ancestors() {
        for name in CONFIG_NAMES {
            let candidate = base.join(name);
            if candidate.is_file() {
                if name == "pyproject.toml" && bare_pyproject.is_none() {
                    bare_pyproject = Some(candidate.clone());
                }
                if let Some(values) = load_config_file(&candidate)? {
                    return Ok(Some((base.to_path_buf(), Some(candidate), values)));
                }
            }
        }
    }
    Ok(bare_pyproject.and_then(|p| {
        p.parent()
            .map(|d| (d.to_path_buf(), Some(p.clone()), BTreeMap::new()))
    }))
}

fn common_ancestor(paths: &[PathBuf]) -> Option<PathBuf> {
    let mut acc: Option<PathBuf> = None;
    for path in paths {
        acc = Some(match acc {
            None => path.clone(),
            Some(a) => {
                let mut common = PathBuf::new();
                for (x, y) in a.components().zip(path.components()) {
                    if x != y {
                        break;
                    }
                    common.push(x);
                }
                common
            }
        });
    }
    acc
}

/// Makes `path` absolute against `cwd` and removes `.` and `..` lexically (as pytest's
/// `absolutepath` does: no symlink resolution).
pub fn absolute(cwd: &Path, path: &Path) -> PathBuf {
    let joined = if path.is_absolute() {
        path.to_path_buf()
    } else {
        cwd.join(path)
    };
    let mut out = PathBuf::new();
    for comp in joined.components() {
        match comp {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// The path part of a command-line argument that may be a node id (`path::Class::test`).
pub fn arg_path(arg: &str) -> &str {
    arg.split("::").next().unwrap_or(arg)
}

/// What pytest's own arguments (`$PYTEST_ADDOPTS`, then those after `--`) say about its
/// configuration: `-c FILE`, `--rootdir DIR` and `-o NAME=VALUE`, the last of each winning.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetupArgs {
    pub config_file: Option<String>,
    pub rootdir: Option<String>,
    /// `-o` values, in order.
    pub overrides: Vec<String>,
}

impl SetupArgs {
    /// Reads them from pytest's arguments, split as pytest reads them.
    pub fn from_argv(argv: &crate::pytest_argv::Argv) -> Self {
        SetupArgs {
            config_file: argv
                .values(&["-c", "--config-file"])
                .last()
                .map(str::to_string),
            rootdir: argv.values(&["--rootdir"]).last().map(str::to_string),
            overrides: argv
                .values(&["-o", "--override-ini"])
                .map(str::to_string)
                .collect(),
        }
    }
}

/// pytest's rootdir, configuration file and values for `args` (paths and node ids) run from
/// `invocation_dir`, as pytest 9 determines them, with what `setup` says on top.
pub fn determine_setup_with(
    invocation_dir: &Path,
    args: &[String],
    setup: &SetupArgs,
) -> Result<PytestConfig> {
    let mut cfg = match &setup.config_file {
        Some(file) => named_config(invocation_dir, args, file)?,
        None => determine_setup(invocation_dir, args)?,
    };
    if let Some(dir) = &setup.rootdir {
        let dir = absolute(
            invocation_dir,
            Path::new(&crate::passthrough::expand_vars(dir)),
        );
        if !dir.is_dir() {
            return Err(Error::Usage(format!(
                "pytest option `--rootdir`: directory '{}' not found; check the option",
                dir.display()
            )));
        }
        cfg.rootdir = dir;
    }
    cfg.apply_overrides(&setup.overrides)?;
    Ok(cfg)
}

/// The configuration pytest reads when told its file with `-c FILE`: that file's pytest
/// section (none is no error), with the file's directory as rootdir. A path that is no
/// regular file (`/dev/null`) means no configuration and says nothing of the rootdir.
fn named_config(invocation_dir: &Path, args: &[String], file: &str) -> Result<PytestConfig> {
    let path = absolute(invocation_dir, Path::new(file));
    let complain = |what: &str| {
        Err(Error::Usage(format!(
            "pytest option `-c`/`--config-file`: config file '{}' {what}; check the option",
            path.display()
        )))
    };
    if !path.exists() {
        return complain("not found");
    }
    if path.is_dir() {
        return complain("is a directory");
    }
    if !path.is_file() {
        // pytest's get_common_ancestor: of the paths given, the invocation directory only
        // when none exists; never the file system's root.
        let rootdir = common_ancestor(&arg_dirs(invocation_dir, args))
            .filter(|d| d.parent().is_some())
            .unwrap_or_else(|| invocation_dir.to_path_buf());
        return Ok(PytestConfig {
            rootdir,
            inifile: Some(path),
            values: BTreeMap::new(),
        });
    }
    let values = match load_config_file(&path)? {
        Some(values) => values,
        None => load_by_suffix(&path)?.unwrap_or_default(),
    };
    Ok(PytestConfig {
        rootdir: path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| invocation_dir.to_path_buf()),
        inifile: Some(path),
        values,
    })
}

/// A `-c` file whose name pytest does not know, read by its suffix as pytest does.
fn load_by_suffix(path: &Path) -> Result<Option<BTreeMap<String, IniValue>>> {
    let ini_section = |section: &str| ini_section_values(path, section);
    match path.extension().and_then(|e| e.to_str()) {
        Some("ini") => ini_section("pytest"),
        Some("cfg") => ini_section("tool:pytest"),
        Some("toml") => {
            // pytest 9 reads a `[pytest]` table first (pytest.toml's form), else
            // pyproject.toml's, and refuses a file with both.
            let doc = parse_toml(path)?;
            match doc.get("pytest").and_then(|t| t.as_table()) {
                Some(_) if doc.get("tool").and_then(|t| t.get("pytest")).is_some() => {
                    Err(Error::Config {
                        path: path.to_path_buf(),
                        message: "has both [pytest] and [tool.pytest]; pytest refuses this too"
                            .into(),
                    })
                }
                Some(table) => Ok(Some(toml_values(table, false))),
                None => pyproject_values(path),
            }
        }
        _ => Err(Error::Usage(format!(
            "pytest option `-c`/`--config-file`: config file '{}' has an unsupported format; pytest reads .ini, .cfg and .toml files",
            path.display()
        ))),
    }
}

/// The directories of the paths among `args` that exist (a file's own directory).
fn arg_dirs(invocation_dir: &Path, args: &[String]) -> Vec<PathBuf> {
    existing_args(invocation_dir, args)
        .iter()
        .map(|p| dir_of(p))
        .collect()
}

/// The paths among `args` (node ids' path parts) that exist, made absolute.
fn existing_args(invocation_dir: &Path, args: &[String]) -> Vec<PathBuf> {
    args.iter()
        .filter(|a| !a.starts_with('-'))
        .map(|a| absolute(invocation_dir, Path::new(arg_path(a))))
        .filter(|p| p.exists())
        .collect()
}

/// A directory itself, or a file's directory.
fn dir_of(path: &Path) -> PathBuf {
    if path.is_dir() {
        path.to_path_buf()
    } else {
        path.parent().map(Path::to_path_buf).unwrap_or_default()
    }
}

/// Determines rootdir and config as pytest does for these command-line arguments.
pub fn determine_setup(invocation_dir: &Path, args: &[String]) -> Result<PytestConfig> {
    let existing = existing_args(invocation_dir, args);
    let dirs: Vec<PathBuf> = existing.iter().map(|p| dir_of(p)).collect();
    let mut ancestor = common_ancestor(&existing).unwrap_or_else(|| invocation_dir.to_path_buf());
    if ancestor.is_file() {
        ancestor = ancestor.parent().map(Path::to_path_buf).unwrap_or(ancestor);
    }
    if let Some((rootdir, inifile, values)) = locate_config(&ancestor)? {
        return Ok(PytestConfig {
            rootdir,
            inifile,
            values,
        });
    }
    if let Some(dir) = ancestor.ancestors().find(|d| d.join("setup.py").is_file()) {
        return Ok(PytestConfig {
            rootdir: dir.to_path_buf(),
            inifile: None,
            values: BTreeMap::new(),
        });
    }
    if dirs != [ancestor.clone()] {
        for dir in &dirs {
            if let Some((rootdir, inifile, values)) = locate_config(dir)? {
                return Ok(PytestConfig {
                    rootdir,
                    inifile,
                    values,
                });
            }
        }
    }
    let mut rootdir = common_ancestor(&[invocation_dir.to_path_buf(), ancestor.clone()])
        .unwrap_or_else(|| invocation_dir.to_path_buf());
    if rootdir.parent().is_none() {
        rootdir = ancestor;
    }
    Ok(PytestConfig {
        rootdir,
        inifile: None,
        values: BTreeMap::new(),
    })
}

/// How many worker slots to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workers {
    Auto,
    Count(usize),
}

impl Workers {
    pub fn resolve(self) -> usize {
        match self {
            Workers::Count(n) => n,
            Workers::Auto => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
        }
    }
}

impl FromStr for Workers {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "auto" {
            return Ok(Workers::Auto);
        }
        match s.parse::<usize>() {
            Ok(0) | Err(_) => Err(format!(
                "expected a positive number of workers or `auto`, got {s:?}"
            )),
            Ok(n) => Ok(Workers::Count(n)),
        }
    }
}

impl<'de> Deserialize<'de> for Workers {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(i64),
            S(String),
            // Anything else (a float, a table): refused below with what is expected.
            Other(serde::de::IgnoredAny),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) if n > 0 => Ok(Workers::Count(n as usize)),
            Raw::N(n) => Err(serde::de::Error::custom(format!(
                "workers must be positive, got {n}"
            ))),
            Raw::S(s) => s.parse().map_err(serde::de::Error::custom),
            Raw::Other(_) => Err(serde::de::Error::custom(
                "expected a positive whole number of workers or \"auto\"",
            )),
        }
    }
}

/// Whether units may hold several files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum UnitMode {
    /// Small files are packed together to amortize interpreter start-up.
    #[default]
    Pack,
    /// One file per pytest process.
    File,
}

impl FromStr for UnitMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "pack" => Ok(UnitMode::Pack),
            "file" => Ok(UnitMode::File),
            other => Err(format!("expected `pack` or `file`, got {other:?}")),
        }
    }
}

/// Whether a test that passed only on a retry counts as passed (`--flaky-result`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum FlakyResult {
    #[default]
    Pass,
    Fail,
}

impl FromStr for FlakyResult {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "pass" => Ok(FlakyResult::Pass),
            "fail" => Ok(FlakyResult::Fail),
            other => Err(format!("expected `pass` or `fail`, got {other:?}")),
        }
    }
}

/// `[tool.racefree]` in pyproject.toml. Every key is optional; the command line wins.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RacefreeConfig {
    pub workers: Option<Workers>,
    pub python: Option<PathBuf>,
    pub unit: Option<UnitMode>,
    pub maxfail: Option<u32>,
    #[serde(alias = "junit_xml")]
    pub junit_xml: Option<PathBuf>,
    pub events: Option<PathBuf>,
    pub durations: Option<usize>,
    /// Fork units from a warm server per slot (default: on, on Linux).
    pub fork: Option<bool>,
    /// Modules the fork servers import ahead of time, besides those learned from history.
    pub preload: Option<Vec<String>>,
    /// Split a file that would outlast the rest of the run into chunks (default: on).
    pub split: Option<bool>,
    /// `[tool.racefree.audit]` belongs to `racefree audit`, which validates it; the runner
    /// only has to let it through (it once made every `racefree run` a usage error).
    #[serde(default, rename = "audit")]
    pub _audit: Option<serde::de::IgnoredAny>,
    /// Per-test limit in seconds.
    pub timeout: Option<f64>,
    pub kill_grace: Option<f64>,
    pub run_timeout: Option<f64>,
    pub retries: Option<u32>,
    pub flaky_result: Option<FlakyResult>,
    pub infra_retries: Option<u32>,
    /// `auto`, `none`, `tmp` or `namespace` (`--isolate`).
    pub isolate: Option<crate::isolation::IsolationMode>,
    /// A network namespace per unit (`--private-network`; namespace isolation only).
    pub private_network: Option<bool>,
}

/// Reads `[tool.racefree]` from `<rootdir>/pyproject.toml`, if there is one.
pub fn load_racefree_config(rootdir: &Path) -> Result<(Option<PathBuf>, RacefreeConfig)> {
    let path = rootdir.join("pyproject.toml");
    if !path.is_file() {
        return Ok((None, RacefreeConfig::default()));
    }
    let doc = parse_toml(&path)?;
    let Some(table) = doc.get("tool").and_then(|t| t.get("racefree")) else {
        return Ok((None, RacefreeConfig::default()));
    };
    let config = table
        .clone()
        .try_into::<RacefreeConfig>()
        .map_err(|e| Error::Config {
            path: path.clone(),
            message: format!("[tool.racefree]: {e}"),
        })?;
    Ok((Some(path), config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::fs;

    fn write(dir: &Path, name: &str, text: &str) {
        let path = dir.join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }

    #[test]
    fn shell_split_like_shlex() {
        assert_eq!(
            shell_split("a b  'c d' \"e f\"").unwrap(),
            vec!["a", "b", "c d", "e f"]
        );
        assert_eq!(shell_split("").unwrap(), Vec::<String>::new());
        assert!(shell_split("'open").is_none());
        assert_eq!(shell_split("x\\ y").unwrap(), vec!["x y"]);
    }

    #[test]
    fn ini_continuation_and_comments() {
        let text =
            "# c\n[pytest]\ntestpaths =\n    tests\n    more\n; c2\npython_files: check_*.py\n";
        let s = parse_ini(Path::new("x.ini"), text).unwrap();
        assert_eq!(s["pytest"]["testpaths"], "tests\nmore");
        assert_eq!(s["pytest"]["python_files"], "check_*.py");
    }

    #[test]
    fn ini_errors_name_the_line() {
        let err = parse_ini(Path::new("bad.ini"), "[pytest\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("bad.ini") && err.contains("line 1"), "{err}");
    }

    /// Decision table: which file wins when several sit in one directory, and which
    /// directory wins when they sit at different levels.
    #[test]
    fn config_precedence() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        write(root, "setup.cfg", "[tool:pytest]\ntestpaths = c\n");
        write(root, "tox.ini", "[pytest]\ntestpaths = t\n");
        write(
            root,
            "pyproject.toml",
            "[tool.pytest.ini_options]\ntestpaths = [\"p\"]\n",
        );
        write(root, "sub/x.py", "");
        let cfg = determine_setup(&root.join("sub"), &[]).unwrap();
        assert_eq!(cfg.rootdir, root);
        assert_eq!(cfg.testpaths().unwrap(), vec!["p"]);
        write(root, "pytest.ini", "[other]\n");
        let cfg = determine_setup(root, &[]).unwrap();
        assert_eq!(cfg.inifile.clone().unwrap(), root.join("pytest.ini"));
        assert!(cfg.testpaths().unwrap().is_empty());
        // A nearer tox.ini without a [pytest] section does not count.
        write(root, "sub/tox.ini", "[tox]\n");
        let cfg = determine_setup(root, &["sub/x.py".into()]).unwrap();
        assert_eq!(cfg.rootdir, root);
        // A nearer setup.cfg with [tool:pytest] does.
        write(
            root,
            "sub/setup.cfg",
            "[tool:pytest]\npython_files = *.py\n",
        );
        let cfg = determine_setup(root, &["sub/x.py::test_a".into()]).unwrap();
        assert_eq!(cfg.rootdir, root.join("sub"));
        assert_eq!(cfg.python_files().unwrap(), vec!["*.py"]);
    }

    #[test]
    fn a_setup_cfgs_pytest_section_is_refused_as_pytest_refuses_it() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        write(root, "setup.cfg", "[pytest]\naddopts = -x\n");
        let err = determine_setup(root, &[]).unwrap_err().to_string();
        assert!(
            err.contains("setup.cfg") && err.contains("change to [tool:pytest]"),
            "{err}"
        );
        // Beside [tool:pytest] it is not read, and not refused (as pytest).
        write(
            root,
            "setup.cfg",
            "[pytest]\naddopts = -x\n\n[tool:pytest]\ntestpaths = t\n",
        );
        assert_eq!(
            determine_setup(root, &[]).unwrap().testpaths().unwrap(),
            ["t"]
        );
    }

    #[test]
    fn pytests_own_arguments_name_its_file_rootdir_and_values() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        write(root, "pytest.ini", "[pytest]\ntestpaths = tests\n");
        write(root, "ci/ci.cfg", "[tool:pytest]\ntestpaths = ci_tests\n");
        write(
            root,
            "ci/other.toml",
            "[tool.pytest.ini_options]\ntestpaths = [\"t\"]\n",
        );
        write(root, "sub/x.py", "");
        let with = |setup: SetupArgs| determine_setup_with(root, &[], &setup);
        // -c FILE: that file, read by its suffix, with its directory as rootdir.
        let cfg = with(SetupArgs {
            config_file: Some("ci/ci.cfg".into()),
            ..SetupArgs::default()
        })
        .unwrap();
        assert_eq!(cfg.rootdir, root.join("ci"));
        assert_eq!(cfg.testpaths().unwrap(), vec!["ci_tests"]);
        let cfg = with(SetupArgs {
            config_file: Some("ci/other.toml".into()),
            ..SetupArgs::default()
        })
        .unwrap();
        assert_eq!(cfg.testpaths().unwrap(), vec!["t"]);
        // A path that is no regular file: no configuration, the rootdir where pytest runs,
        // or with paths, their common ancestor.
        let cfg = with(SetupArgs {
            config_file: Some("/dev/null".into()),
            ..SetupArgs::default()
        })
        .unwrap();
        assert_eq!(cfg.rootdir, root);
        assert!(cfg.values.is_empty());
        let null = SetupArgs {
            config_file: Some("/dev/null".into()),
            ..SetupArgs::default()
        };
        let cfg = determine_setup_with(root, &["sub/x.py".into()], &null).unwrap();
        assert_eq!(cfg.rootdir, root.join("sub"));
        // A .toml file named with -c: pytest.toml's `[pytest]` first, and not both forms.
        write(root, "ci/native.toml", "[pytest]\ntestpaths = [\"n\"]\n");
        let cfg = with(SetupArgs {
            config_file: Some("ci/native.toml".into()),
            ..SetupArgs::default()
        })
        .unwrap();
        assert_eq!(cfg.testpaths().unwrap(), vec!["n"]);
        write(
            root,
            "ci/both.toml",
            "[pytest]\ntestpaths = [\"n\"]\n[tool.pytest.ini_options]\ntestpaths = [\"t\"]\n",
        );
        assert!(
            with(SetupArgs {
                config_file: Some("ci/both.toml".into()),
                ..SetupArgs::default()
            })
            .is_err()
        );
        for (file, says) in [("missing.ini", "not found"), ("sub", "is a directory")] {
            let err = with(SetupArgs {
                config_file: Some(file.into()),
                ..SetupArgs::default()
            })
            .unwrap_err()
            .to_string();
            assert!(err.contains(says) && err.contains("-c"), "{err}");
        }
        // --rootdir moves the rootdir, not the configuration file; -o overrides values.
        let cfg = with(SetupArgs {
            rootdir: Some("sub".into()),
            overrides: vec!["testpaths=a b".into(), "python_files=check_*.py".into()],
            ..SetupArgs::default()
        })
        .unwrap();
        assert_eq!(cfg.rootdir, root.join("sub"));
        assert_eq!(cfg.inifile.clone().unwrap(), root.join("pytest.ini"));
        assert_eq!(cfg.testpaths().unwrap(), vec!["a", "b"]);
        assert_eq!(cfg.python_files().unwrap(), vec!["check_*.py"]);
        let err = with(SetupArgs {
            overrides: vec!["novalue".into()],
            ..SetupArgs::default()
        })
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("NAME=VALUE") && err.contains("novalue"),
            "{err}"
        );
        let err = with(SetupArgs {
            rootdir: Some("nowhere".into()),
            ..SetupArgs::default()
        })
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("--rootdir") && err.contains("nowhere"),
            "{err}"
        );
    }

    #[test]
    fn pytest9_native_toml_table() {
        let t = tempfile::tempdir().unwrap();
        write(
            t.path(),
            "pyproject.toml",
            "[tool.pytest]\ntestpaths = [\"a\", \"b\"]\nminversion = 9\n",
        );
        let cfg = determine_setup(t.path(), &[]).unwrap();
        assert_eq!(cfg.testpaths().unwrap(), vec!["a", "b"]);
        write(
            t.path(),
            "pyproject.toml",
            "[tool.pytest]\ntestpaths = [\"a\"]\n[tool.pytest.ini_options]\ntestpaths = \"b\"\n",
        );
        assert!(determine_setup(t.path(), &[]).is_err());
    }

    #[test]
    fn no_config_falls_back_to_setup_py_then_ancestor() {
        let t = tempfile::tempdir().unwrap();
        write(t.path(), "proj/setup.py", "");
        write(t.path(), "proj/tests/test_a.py", "");
        let cfg = determine_setup(t.path(), &["proj/tests/test_a.py".into()]).unwrap();
        assert_eq!(cfg.rootdir, t.path().join("proj"));
        fs::remove_file(t.path().join("proj/setup.py")).unwrap();
        let cfg = determine_setup(&t.path().join("proj"), &["tests".into()]).unwrap();
        assert_eq!(cfg.rootdir, t.path().join("proj"));
    }

    #[test]
    fn racefree_table() {
        let t = tempfile::tempdir().unwrap();
        write(
            t.path(),
            "pyproject.toml",
            "[tool.racefree]\nworkers = 3\nunit = \"file\"\nisolate = \"namespace\"\nprivate-network = true\n",
        );
        let (_, cfg) = load_racefree_config(t.path()).unwrap();
        assert_eq!(cfg.workers, Some(Workers::Count(3)));
        assert_eq!(cfg.unit, Some(UnitMode::File));
        assert_eq!(
            cfg.isolate,
            Some(crate::isolation::IsolationMode::Namespace)
        );
        assert_eq!(cfg.private_network, Some(true));
        write(
            t.path(),
            "pyproject.toml",
            "[tool.racefree]\nisolate = \"chroot\"\n",
        );
        let err = load_racefree_config(t.path()).unwrap_err().to_string();
        assert!(err.contains("chroot"), "{err}");
        write(t.path(), "pyproject.toml", "[tool.racefree]\nwrokers = 3\n");
        let err = load_racefree_config(t.path()).unwrap_err().to_string();
        assert!(
            err.contains("wrokers") && err.contains("pyproject.toml"),
            "{err}"
        );
        write(t.path(), "pyproject.toml", "[tool.racefree]\nworkers = 0\n");
        assert!(load_racefree_config(t.path()).is_err());
        write(
            t.path(),
            "pyproject.toml",
            "[tool.racefree]\nworkers = 2.5\n",
        );
        let err = load_racefree_config(t.path()).unwrap_err().to_string();
        assert!(
            err.contains("workers") && err.contains("positive whole number"),
            "{err}"
        );
        write(
            t.path(),
            "pyproject.toml",
            "[tool.racefree]\nsplit = false\n",
        );
        assert_eq!(load_racefree_config(t.path()).unwrap().1.split, Some(false));
        write(
            t.path(),
            "pyproject.toml",
            "[tool.racefree]\nsplit = \"no\"\n",
        );
        let err = load_racefree_config(t.path()).unwrap_err().to_string();
        assert!(err.contains("split") && err.contains("boolean"), "{err}");
    }

    #[test]
    fn audit_subtable_is_left_to_audit() {
        let t = tempfile::tempdir().unwrap();
        write(
            t.path(),
            "pyproject.toml",
            "[tool.racefree]\nworkers = 2\n\n[tool.racefree.audit]\ndisable = [\"RF004\"]\n",
        );
        let (_, cfg) = load_racefree_config(t.path()).unwrap();
        assert_eq!(cfg.workers, Some(Workers::Count(2)));
        write(
            t.path(),
            "pyproject.toml",
            "[tool.racefree.audit]\nfail-on = \"never\"\n",
        );
        assert!(load_racefree_config(t.path()).is_ok());
    }

    proptest! {
        #[test]
        fn workers_parse(n in 1usize..1000) {
            prop_assert_eq!(n.to_string().parse::<Workers>(), Ok(Workers::Count(n)));
        }

        #[test]
        fn shell_split_roundtrip(words in proptest::collection::vec("[a-zA-Z0-9_./*-]{1,8}", 0..6)) {
            let joined = words.join(" ");
            prop_assert_eq!(shell_split(&joined).unwrap(), words);
        }
    }
}
