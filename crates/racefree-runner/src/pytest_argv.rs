//! pytest's own arguments (after `--`, in `$PYTEST_ADDOPTS`, in `addopts`) read as pytest's
//! option parser reads them: which words are options, which are an option's value, and which
//! are paths or node ids to test.
//!
//! racefree must know the paths: pytest would collect them in every unit (each unit's pytest
//! gets the arguments after `--`, and reads `$PYTEST_ADDOPTS` and `addopts` itself), so a path
//! after `--` joins racefree's own paths instead, and one in `$PYTEST_ADDOPTS` or `addopts`
//! is refused. It must also know `-c`, `--rootdir` and `-o`, which change the configuration
//! racefree's discovery reads.
//!
//! Which options take a value is pytest's own table (`pytest_takes`, checked against the test
//! interpreter's pytest by an integration test) and that of widely used plugins. An option
//! racefree does not know, followed by a word that names an existing path, is refused: it
//! cannot tell a flag followed by a path (`--runslow tests`) from an option with its value
//! (`--html report.html`), and either guess would run the wrong tests or lose an option.

use std::path::{Path, PathBuf};

use crate::config::{PytestConfig, absolute, arg_path};
use crate::error::{Error, Result};

/// How an option takes its value, as pytest's parser (argparse) reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Takes {
    Nothing,
    /// The next word, whatever it is, unless given with `=`.
    One,
    /// The next word if it does not start with `-` (argparse's `nargs="?"`).
    Maybe,
}

/// pytest's own long options that take a value (pytest 9's parser; the rest of pytest's
/// options are flags, listed in `PYTEST_FLAGS`).
const PYTEST_VALUED: &[&str] = &[
    "--assert",
    "--basetemp",
    "--capture",
    "--code-highlight",
    "--color",
    "--confcutdir",
    "--config-file",
    "--deselect",
    "--doctest-glob",
    "--doctest-report",
    "--durations",
    "--durations-min",
    "--ignore",
    "--ignore-glob",
    "--import-mode",
    "--junit-prefix",
    "--junit-xml",
    "--junitprefix",
    "--junitxml",
    "--last-failed-no-failures",
    "--lfnf",
    "--log-auto-indent",
    "--log-cli-date-format",
    "--log-cli-format",
    "--log-cli-level",
    "--log-date-format",
    "--log-disable",
    "--log-file",
    "--log-file-date-format",
    "--log-file-format",
    "--log-file-level",
    "--log-file-mode",
    "--log-format",
    "--log-level",
    "--max-warnings",
    "--maxfail",
    "--override-ini",
    "--pastebin",
    "--pdbcls",
    "--pythonwarnings",
    "--report-chars",
    "--rootdir",
    "--show-capture",
    "--tb",
    "--verbosity",
];

/// pytest's own long options whose value may be left out.
const PYTEST_MAYBE: &[&str] = &["--cache-show", "--debug"];

/// pytest's own long flags.
const PYTEST_FLAGS: &[&str] = &[
    "--cache-clear",
    "--co",
    "--collect-in-virtualenv",
    "--collect-only",
    "--collectonly",
    "--continue-on-collection-errors",
    "--disable-plugin-autoload",
    "--disable-pytest-warnings",
    "--disable-warnings",
    "--doctest-continue-on-failure",
    "--doctest-ignore-import-errors",
    "--doctest-modules",
    "--exitfirst",
    "--failed-first",
    "--ff",
    "--fixtures",
    "--fixtures-per-test",
    "--force-short-summary",
    "--full-trace",
    "--fulltrace",
    "--funcargs",
    "--help",
    "--keep-duplicates",
    "--keepduplicates",
    "--last-failed",
    "--lf",
    "--markers",
    "--new-first",
    "--nf",
    "--no-fold-skipped",
    "--no-header",
    "--no-showlocals",
    "--no-summary",
    "--noconftest",
    "--pdb",
    "--pyargs",
    "--quiet",
    "--runxfail",
    "--setup-only",
    "--setup-plan",
    "--setup-show",
    "--setuponly",
    "--setupplan",
    "--setupshow",
    "--showlocals",
    "--stepwise",
    "--stepwise-reset",
    "--stepwise-skip",
    "--strict",
    "--strict-config",
    "--strict-markers",
    "--sw",
    "--sw-reset",
    "--sw-skip",
    "--trace",
    "--trace-config",
    "--traceconfig",
    "--verbose",
    "--version",
    "--xfail-tb",
];

/// pytest's short options that take a value; its other short options (`-v -q -s -l -x -h
/// -V`) are flags.
const PYTEST_SHORT_VALUED: &[char] = &['c', 'k', 'm', 'o', 'p', 'r', 'W'];
const PYTEST_SHORT_FLAGS: &[char] = &['h', 'l', 'q', 's', 'v', 'x', 'V'];

/// Long options of widely used plugins that take a value.
const PLUGIN_VALUED: &[&str] = &[
    // pytest-cov
    "--cov-report",
    "--cov-config",
    "--cov-fail-under",
    "--cov-context",
    "--cov-precision",
    // pytest-rerunfailures
    "--reruns",
    "--reruns-delay",
    "--only-rerun",
    "--rerun-except",
    "--max-suite-reruns",
    // pytest-timeout
    "--timeout",
    "--timeout-method",
    "--timeout_method",
    "--session-timeout",
    // pytest-xdist (refused or ignored by racefree, but still read right)
    "--numprocesses",
    "--maxprocesses",
    "--max-worker-restart",
    "--dist",
    "--tx",
    "--rsyncdir",
    "--rsyncignore",
    // Hypothesis
    "--hypothesis-profile",
    "--hypothesis-verbosity",
    "--hypothesis-seed",
    // pytest-randomly
    "--randomly-seed",
    // pytest-html
    "--html",
    "--css",
    // pytest-django
    "--ds",
    "--dc",
    "--liveserver",
    // pytest-asyncio
    "--asyncio-mode",
    // allure-pytest
    "--alluredir",
    // pytest-json-report
    "--json-report-file",
    "--json-report-indent",
    // pytest-benchmark
    "--benchmark-json",
    "--benchmark-storage",
    "--benchmark-save",
    "--benchmark-sort",
    "--benchmark-group-by",
    "--benchmark-columns",
    "--benchmark-name",
    "--benchmark-min-time",
    "--benchmark-max-time",
    "--benchmark-min-rounds",
    "--benchmark-timer",
    "--benchmark-compare-fail",
    // pytest-playwright
    "--browser",
    "--browser-channel",
    "--base-url",
    "--device",
    "--output",
    "--tracing",
    "--video",
    "--screenshot",
    "--slowmo",
];

/// Plugin long options whose value may be left out.
const PLUGIN_MAYBE: &[&str] = &["--cov", "--benchmark-compare", "--benchmark-histogram"];

/// Plugin short options that take a value (pytest-xdist's `-n`).
const PLUGIN_SHORT_VALUED: &[char] = &['n'];

/// Whether `letter` is one of pytest's short flags (no value: `-v -q -s -l -x -h -V`).
pub(crate) fn is_short_flag(letter: char) -> bool {
    PYTEST_SHORT_FLAGS.contains(&letter)
}

fn long_takes(name: &str) -> Option<Takes> {
    if PYTEST_VALUED.contains(&name) || PLUGIN_VALUED.contains(&name) {
        Some(Takes::One)
    } else if PYTEST_MAYBE.contains(&name) || PLUGIN_MAYBE.contains(&name) {
        Some(Takes::Maybe)
    } else if PYTEST_FLAGS.contains(&name) {
        Some(Takes::Nothing)
    } else {
        None
    }
}

fn short_takes(letter: char) -> Option<Takes> {
    if PYTEST_SHORT_VALUED.contains(&letter) || PLUGIN_SHORT_VALUED.contains(&letter) {
        Some(Takes::One)
    } else if PYTEST_SHORT_FLAGS.contains(&letter) {
        Some(Takes::Nothing)
    } else {
        None
    }
}

/// pytest's long options, for the integration test that compares them with the
/// interpreter's pytest: (name, whether it takes a value, whether the value may be left out).
pub fn pytest_long_options() -> impl Iterator<Item = (&'static str, bool, bool)> {
    PYTEST_VALUED
        .iter()
        .map(|n| (*n, true, false))
        .chain(PYTEST_MAYBE.iter().map(|n| (*n, true, true)))
        .chain(PYTEST_FLAGS.iter().map(|n| (*n, false, false)))
}

/// Where pytest's arguments came from, for messages.
#[derive(Debug, Clone)]
pub enum Source {
    /// After `--` on racefree's command line.
    Given,
    /// `$PYTEST_ADDOPTS`.
    Env,
    /// `addopts` in this configuration file.
    Addopts(String),
}

impl Source {
    fn describe(&self) -> String {
        match self {
            Source::Given => "after `--`".to_string(),
            Source::Env => "in PYTEST_ADDOPTS".to_string(),
            Source::Addopts(file) => format!("in addopts of {file}"),
        }
    }

    /// What to do with a path to test given there.
    fn paths_instead(&self) -> &'static str {
        match self {
            Source::Given => "give it to racefree before `--`",
            Source::Env => "give it to racefree on the command line",
            Source::Addopts(_) => {
                "list it in `testpaths`, or give it to racefree on the command line"
            }
        }
    }
}

/// pytest's arguments, split.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Argv {
    /// The options with their values, in order, as given.
    pub options: Vec<String>,
    /// Paths and node ids, in order.
    pub paths: Vec<String>,
    /// Every option given a value: (its name as written, the value).
    pub valued: Vec<(String, String)>,
}

impl Argv {
    /// The values given to an option under any of `names`, in order.
    pub fn values<'a>(&'a self, names: &'a [&str]) -> impl Iterator<Item = &'a str> + 'a {
        self.valued
            .iter()
            .filter(move |(n, _)| names.contains(&n.as_str()))
            .map(|(_, v)| v.as_str())
    }
}

/// Splits `args` (`source` says where they came from, for messages) into options and paths;
/// `cwd` tells whether a word names an existing path. See the module's comment for the one
/// case refused.
pub fn split(args: &[String], cwd: &Path, source: &Source) -> Result<Argv> {
    let mut out = Argv::default();
    let mut i = 0;
    // After a bare `--`, every word is a path, as in argparse.
    let mut only_paths = false;
    while i < args.len() {
        let word = &args[i];
        i += 1;
        if only_paths || word == "-" || !word.starts_with('-') {
            out.paths.push(word.clone());
            continue;
        }
        out.options.push(word.clone());
        if word == "--" {
            only_paths = true;
            out.options.pop();
            continue;
        }
        // `-c=FILE`: argparse takes what follows `=` as a known short option's value (a
        // bundle keeps the `=`: `-vo=x` is `-v -o =x`).
        if let Some((short, value)) = word.split_once('=')
            && let Some(letter) = short.strip_prefix('-').filter(|l| l.len() == 1)
            && let Some(c) = letter.chars().next()
            && short_takes(c) == Some(Takes::One)
        {
            out.valued.push((short.to_string(), value.to_string()));
            continue;
        }
        let (name, takes, attached) = if let Some(long) = word.strip_prefix("--") {
            match long.split_once('=') {
                Some((name, value)) => {
                    let name = format!("--{name}");
                    out.valued.push((name, value.to_string()));
                    continue;
                }
                None => (word.clone(), long_takes(word), None),
            }
        } else {
            // A bundle of short options: flags until one that takes a value, which takes
            // the rest of the word, or else the next word.
            let letters: Vec<char> = word[1..].chars().collect();
            let mut found = (word.clone(), Some(Takes::Nothing), None);
            for (k, &letter) in letters.iter().enumerate() {
                match short_takes(letter) {
                    Some(Takes::Nothing) => continue,
                    takes => {
                        let rest: String = letters[k + 1..].iter().collect();
                        found = (
                            format!("-{letter}"),
                            takes,
                            (!rest.is_empty()).then_some(rest),
                        );
                        break;
                    }
                }
            }
            found
        };
        if let Some(value) = attached {
            if takes.is_some() {
                out.valued.push((name, value));
            }
            continue;
        }
        let next = args.get(i);
        let next_is_word = next.is_some_and(|n| !n.starts_with('-') || n == "-");
        match takes {
            Some(Takes::Nothing) => {}
            Some(Takes::One) => {
                if let Some(value) = next {
                    out.options.push(value.clone());
                    out.valued.push((name, value.clone()));
                    i += 1;
                }
            }
            Some(Takes::Maybe) => {
                if let (true, Some(value)) = (next_is_word, next) {
                    out.options.push(value.clone());
                    out.valued.push((name, value.clone()));
                    i += 1;
                }
            }
            None => {
                let Some(value) = next.filter(|_| next_is_word) else {
                    continue;
                };
                if absolute(cwd, Path::new(arg_path(value))).exists() {
                    return Err(Error::Usage(format!(
                        "pytest option `{word}` ({where_}) is followed by `{value}`, which names a path: racefree cannot tell whether that is the option's value or a path to test. \
                         If it is the option's value, write `{word}={value}`; if it is a path to test, {instead}",
                        where_ = source.describe(),
                        instead = source.paths_instead(),
                    )));
                }
                // Not a path: the option's value (pytest would refuse it as a path anyway).
                out.options.push(value.clone());
                out.valued.push((name, value.clone()));
                i += 1;
            }
        }
    }
    Ok(out)
}

/// pytest's arguments as a run meets them: `$PYTEST_ADDOPTS` (which pytest reads first) and
/// those given after `--`.
#[derive(Debug, Clone, Default)]
pub struct CommandLine {
    pub env: Argv,
    pub given: Argv,
}

impl CommandLine {
    /// Reads `$PYTEST_ADDOPTS` and splits both. A path in `$PYTEST_ADDOPTS` is refused: every
    /// unit's pytest reads the variable and would run it again.
    pub fn read(cwd: &Path, after_dashes: &[String]) -> Result<Self> {
        let env = split(&crate::passthrough::env_addopts()?, cwd, &Source::Env)?;
        if let Some(path) = env.paths.first() {
            return Err(Error::Usage(format!(
                "PYTEST_ADDOPTS names `{path}` to test: every pytest process racefree starts reads the variable and would run it again; give it to racefree on the command line instead"
            )));
        }
        if let Some(word) = after_dashes.iter().find(|w| w.starts_with('@')) {
            return Err(Error::Usage(format!(
                "`{word}` after `--`: racefree reads no argument files (pytest's `@FILE`); give the arguments themselves"
            )));
        }
        let given = split(after_dashes, cwd, &Source::Given)?;
        Ok(CommandLine { env, given })
    }

    /// The options, `$PYTEST_ADDOPTS`'s first, as pytest reads them.
    pub fn options(&self) -> Vec<String> {
        let mut out = self.env.options.clone();
        out.extend(self.given.options.iter().cloned());
        out
    }

    /// What they say about pytest's configuration (`-c`, `--rootdir`, `-o`).
    pub fn setup(&self) -> crate::config::SetupArgs {
        let mut both = self.env.clone();
        both.valued.extend(self.given.valued.iter().cloned());
        crate::config::SetupArgs::from_argv(&both)
    }
}

/// The configuration's `addopts` (from `file`), split. A path there is refused: every
/// unit's pytest reads it and would run it again.
pub fn read_addopts(addopts: &[String], cwd: &Path, file: Option<&Path>) -> Result<Argv> {
    let where_ = file.map_or("the configuration".to_string(), |f| f.display().to_string());
    let split = split(addopts, cwd, &Source::Addopts(where_.clone()))?;
    match split.paths.first() {
        None => Ok(split),
        Some(path) => Err(Error::Usage(format!(
            "addopts in {where_} names `{path}` to test: every pytest process racefree starts reads addopts and would run it again; list it in `testpaths` instead, or give it to racefree on the command line"
        ))),
    }
}

/// What a run (or `racefree plan`) makes of its paths and pytest's arguments, before
/// discovery.
#[derive(Debug)]
pub struct Resolved {
    /// racefree's paths and node ids, then those given after `--`.
    pub args: Vec<String>,
    /// pytest's configuration as pytest reads it for them: `-c`, `--rootdir`, and `-o` from
    /// `addopts`, `$PYTEST_ADDOPTS` and after `--` (the last one given winning).
    pub pytest: PytestConfig,
    /// The project's directory, for racefree's own `[tool.racefree]` and history: pytest's
    /// rootdir as found without `-c` or `--rootdir`, which do not move racefree's state.
    pub project_dir: PathBuf,
    pub command_line: CommandLine,
    /// The configuration's `addopts`, as written.
    pub addopts: Vec<String>,
    /// The same, split.
    pub addopts_argv: Argv,
}

impl Resolved {
    pub fn new(cwd: &Path, args: &[String], after_dashes: &[String]) -> Result<Resolved> {
        let command_line = CommandLine::read(cwd, after_dashes)?;
        let mut args = args.to_vec();
        args.extend(command_line.given.paths.iter().cloned());
        let setup = command_line.setup();
        let mut pytest = crate::config::determine_setup_with(cwd, &args, &setup)?;
        let addopts = pytest.addopts()?;
        let addopts_argv = read_addopts(&addopts, cwd, pytest.inifile.as_deref())?;
        // pytest reads addopts before $PYTEST_ADDOPTS and the command line.
        let from_addopts: Vec<&str> = addopts_argv.values(&["-o", "--override-ini"]).collect();
        pytest.apply_overrides(&from_addopts)?;
        pytest.apply_overrides(&setup.overrides)?;
        let project_dir = if setup.config_file.is_some() || setup.rootdir.is_some() {
            crate::config::determine_setup(cwd, &args)?.rootdir
        } else {
            pytest.rootdir.clone()
        };
        Ok(Resolved {
            args,
            pytest,
            project_dir,
            command_line,
            addopts,
            addopts_argv,
        })
    }

    /// The value pytest takes for an option given under any of `names`: the last one, of
    /// addopts, `$PYTEST_ADDOPTS` and the command line in that order.
    pub fn last_value(&self, names: &[&str]) -> Option<String> {
        [
            &self.addopts_argv,
            &self.command_line.env,
            &self.command_line.given,
        ]
        .iter()
        .flat_map(|argv| argv.values(names))
        .last()
        .map(str::to_string)
    }

    /// The options every unit's pytest also reads, in pytest's order: addopts, then
    /// `$PYTEST_ADDOPTS`, then those after `--`.
    pub fn pytest_flags(&self) -> Vec<String> {
        let mut flags = self.addopts.clone();
        flags.extend(self.command_line.options());
        flags
    }
}

/// Refuses test files outside pytest's rootdir (only `-c` or `--rootdir` put them there):
/// pytest names such a file's tests by the path it was given, so a unit given the file
/// alone would name them `::test` and no id would be pytest's.
pub fn refuse_files_outside_rootdir<'a>(
    rootdir: &Path,
    mut files: impl Iterator<Item = &'a Path>,
) -> Result<()> {
    match files.find(|f| !f.starts_with(rootdir)) {
        None => Ok(()),
        Some(file) => Err(Error::Usage(format!(
            "{} lies outside pytest's rootdir {}: racefree runs each file in a pytest process of its own, which would not name its tests as pytest does; point `--rootdir` or `-c` at a directory above the tests",
            file.display(),
            rootdir.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    fn split_here(a: &[&str]) -> Result<Argv> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("tests")).unwrap();
        std::fs::write(dir.path().join("tests/test_a.py"), "").unwrap();
        std::fs::write(dir.path().join("report.html"), "").unwrap();
        split(&v(a), dir.path(), &Source::Given)
    }

    #[test]
    fn paths_and_node_ids_are_told_from_options_and_their_values() {
        let a = split_here(&[
            "-v",
            "tests/test_a.py::test_x",
            "-k",
            "tests",
            "--tb=short",
            "-p",
            "no:randomly",
            "tests",
            "--maxfail",
            "3",
            "-ra",
            "--strict-markers",
            "missing_dir",
        ])
        .unwrap();
        assert_eq!(
            a.paths,
            v(&["tests/test_a.py::test_x", "tests", "missing_dir"])
        );
        assert_eq!(
            a.options,
            v(&[
                "-v",
                "-k",
                "tests",
                "--tb=short",
                "-p",
                "no:randomly",
                "--maxfail",
                "3",
                "-ra",
                "--strict-markers"
            ])
        );
        assert_eq!(a.values(&["-k"]).collect::<Vec<_>>(), ["tests"]);
        assert_eq!(a.values(&["-r"]).collect::<Vec<_>>(), ["a"]);
        assert_eq!(a.values(&["--tb"]).collect::<Vec<_>>(), ["short"]);
    }

    #[test]
    fn short_bundles_take_their_value_from_the_rest_or_the_next_word() {
        let a = split_here(&["-vsk", "tests", "-xk", "x", "-okey=v", "tests"]).unwrap();
        assert_eq!(a.paths, v(&["tests"]));
        assert_eq!(a.values(&["-k"]).collect::<Vec<_>>(), ["tests", "x"]);
        assert_eq!(a.values(&["-o"]).collect::<Vec<_>>(), ["key=v"]);
    }

    #[test]
    fn a_short_option_may_take_its_value_after_an_equals_sign() {
        let a = split_here(&["-c=ci.ini", "-o=python_files=check_*.py", "-vk=x", "tests"]).unwrap();
        assert_eq!(a.paths, v(&["tests"]));
        assert_eq!(a.values(&["-c"]).collect::<Vec<_>>(), ["ci.ini"]);
        assert_eq!(
            a.values(&["-o"]).collect::<Vec<_>>(),
            ["python_files=check_*.py"]
        );
        // In a bundle the `=` stays, as argparse keeps it.
        assert_eq!(a.values(&["-k"]).collect::<Vec<_>>(), ["=x"]);
    }

    #[test]
    fn an_optional_value_is_taken_only_when_it_is_no_option() {
        let a = split_here(&["--cov", "-v", "tests", "--cov", "src"]).unwrap();
        assert_eq!(a.paths, v(&["tests"]));
        assert_eq!(a.values(&["--cov"]).collect::<Vec<_>>(), ["src"]);
    }

    #[test]
    fn everything_after_a_bare_double_dash_is_a_path() {
        let a = split_here(&["-q", "--", "-weird-name.py", "tests"]).unwrap();
        assert_eq!(a.options, v(&["-q"]));
        assert_eq!(a.paths, v(&["-weird-name.py", "tests"]));
    }

    #[test]
    fn an_unknown_option_before_an_existing_path_is_refused_by_name() {
        let err = split_here(&["--my-plugin-flag", "tests"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("`--my-plugin-flag`"), "{err}");
        assert!(err.contains("`--my-plugin-flag=tests`"), "{err}");
        assert!(err.contains("give it to racefree before `--`"), "{err}");
        // Known options decide by themselves; an unknown one's non-path word is its value.
        assert_eq!(
            split_here(&["--html", "report.html"]).unwrap().paths,
            v(&[])
        );
        let a = split_here(&["--my-opt", "some.value", "tests"]).unwrap();
        assert_eq!(a.paths, v(&["tests"]));
        assert_eq!(a.values(&["--my-opt"]).collect::<Vec<_>>(), ["some.value"]);
        assert_eq!(
            split_here(&["--my-opt=tests", "tests"]).unwrap().paths,
            v(&["tests"])
        );
    }
}
