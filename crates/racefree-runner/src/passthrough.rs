//! pytest's own options as racefree meets them (in `addopts`, then after `--`): the ones it
//! acts on run-wide, the ones it refuses because they cannot work in parallel pytest
//! processes whose output racefree reads, and pytest-xdist's.

use crate::config::shell_split;
use crate::error::{Error, Result};

/// pytest's options in `$PYTEST_ADDOPTS` (which every unit's pytest reads too), split as
/// pytest splits them.
pub fn env_addopts() -> Result<Vec<String>> {
    let Some(text) = std::env::var_os("PYTEST_ADDOPTS") else {
        return Ok(Vec::new());
    };
    let text = text.to_string_lossy();
    shell_split(&text).ok_or_else(|| {
        Error::Usage(format!(
            "PYTEST_ADDOPTS has an unclosed quote: {text:?}; fix the variable or unset it"
        ))
    })
}

/// An option's name: `--cov` of `--cov=src` (a short option or a bare value, unchanged).
pub fn option_name(flag: &str) -> &str {
    flag.split_once('=').map_or(flag, |(name, _)| name)
}

/// Refuses pytest options that make a pytest process print something and run no tests, ask
/// for a terminal, or need pytest's own last-failed state (racefree runs pytest with
/// `-p no:lfplugin -p no:nfplugin -p no:stepwise`): each would otherwise end in units that report nothing,
/// a debugger prompt nobody sees, or state rewritten from each unit's share of the tests. The message names the option and what to do instead.
pub fn refuse_unworkable(flags: &[String]) -> Result<()> {
    for flag in flags {
        let name = option_name(flag);
        let Some(instead) = instead_of(name) else {
            continue;
        };
        return Err(Error::Usage(format!(
            "pytest option `{flag}` (after `--`, in addopts or in PYTEST_ADDOPTS) does not work under racefree run: {instead}"
        )));
    }
    Ok(())
}

fn instead_of(name: &str) -> Option<&'static str> {
    Some(match name {
        "--collect-only" | "--collectonly" | "--co" => {
            "it lists tests and runs none; `racefree run --list-files` lists the files racefree would run, `pytest --collect-only -q` the tests"
        }
        "--setup-plan"
        | "--fixtures"
        | "--funcargs"
        | "--fixtures-per-test"
        | "--markers"
        | "-h"
        | "--help"
        | "--version"
        | "-V" => "it prints information and runs no tests; run pytest with it directly",
        "--pyargs" => {
            "racefree finds test files by path; give the package's test directory instead"
        }
        "--pdb" | "--trace" => {
            "a debugger needs a terminal and racefree's pytest processes have none; run the failing test alone with `pytest --pdb NODE_ID`"
        }
        "--lf" | "--last-failed" | "--ff" | "--failed-first" => {
            "racefree runs pytest without its last-failed plugin; use racefree's own `--lf`/`--ff` (before `--`), which read racefree's history"
        }
        "--sw"
        | "--stepwise"
        | "--sw-skip"
        | "--stepwise-skip"
        | "--sw-reset"
        | "--stepwise-reset"
        | "--nf"
        | "--new-first"
        | "--cache-show"
        | "--cache-clear"
        | "--lfnf"
        | "--last-failed-no-failures" => {
            "each of racefree's pytest processes sees only its share of the tests, so pytest's own last-failed, new-first and stepwise state cannot work there (racefree runs pytest with -p no:lfplugin -p no:nfplugin -p no:stepwise); drop the option (racefree's history orders and selects runs: see `--lf`, `--ff`)"
        }
        _ => return None,
    })
}

/// `-x`/`--exitfirst`/`--maxfail N` given to pytest mean the same run-wide: racefree stops
/// the whole run, as pytest stops its one process (a unit's own pytest stopping alone would
/// leave the other slots running). Short flags may be bundled (`-xvs`).
pub fn maxfail(flags: &[String]) -> Option<u32> {
    let mut found = None;
    let mut iter = flags.iter();
    while let Some(flag) = iter.next() {
        if flag == "--exitfirst" || is_short_bundle_with(flag, 'x') {
            found = Some(1);
        } else if flag == "--maxfail" {
            found = iter.next().and_then(|n| n.parse().ok()).or(found);
        } else if let Some(n) = flag.strip_prefix("--maxfail=") {
            found = n.parse().ok().or(found);
        }
    }
    found
}

/// pytest's `--junitxml PATH` (or `--junit-xml`, either with `=`): the last one given, as
/// pytest's parser takes it; `Some("")` turns it off, as in pytest.
pub fn junit_xml(flags: &[String]) -> Option<String> {
    let mut found = None;
    let mut iter = flags.iter();
    while let Some(flag) = iter.next() {
        if flag == "--junitxml" || flag == "--junit-xml" {
            found = iter.next().cloned().or(found);
        } else if let Some(path) = flag
            .strip_prefix("--junitxml=")
            .or_else(|| flag.strip_prefix("--junit-xml="))
        {
            found = Some(path.to_string());
        }
    }
    found
}

/// A `--junitxml` path as pytest takes it: `$NAME` and `${NAME}` replaced by the
/// environment's values (left as they are when unset, as Python's `expandvars` does), then
/// a leading `~` by the home directory.
pub fn expand_path(path: &str) -> String {
    let out = expand_vars(path);
    match (out.strip_prefix('~'), std::env::var("HOME")) {
        (Some(tail), Ok(home)) if tail.is_empty() || tail.starts_with('/') => {
            format!("{home}{tail}")
        }
        _ => out,
    }
}

/// `$NAME` and `${NAME}` replaced by the environment's values, left as they are when unset
/// (Python's `os.path.expandvars`).
pub fn expand_vars(path: &str) -> String {
    let mut out = String::new();
    let mut rest = path;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, len) = if let Some(inner) = after.strip_prefix('{') {
            match inner.find('}') {
                Some(end) => (&inner[..end], end + 2),
                None => ("", 0),
            }
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], end)
        };
        match std::env::var(name).ok().filter(|_| !name.is_empty()) {
            Some(value) => out.push_str(&value),
            None => out.push_str(&rest[at..at + 1 + len]),
        }
        rest = &rest[at + 1 + len..];
    }
    out.push_str(rest);
    out
}

/// The short flag `wanted` (`x`, `s`) alone or bundled, as pytest's parser reads short
/// flags: each letter is a flag until one that takes a value, which takes the rest (`-vxs`
/// and `-xrA` hold `-x`; `-kx` is `-k x` and `-rx` is `-r x`).
fn is_short_bundle_with(flag: &str, wanted: char) -> bool {
    let Some(letters) = flag.strip_prefix('-') else {
        return false;
    };
    if letters.starts_with('-') {
        return false;
    }
    for letter in letters.chars() {
        match letter {
            l if l == wanted => return true,
            l if crate::pytest_argv::is_short_flag(l) => continue,
            _ => return false,
        }
    }
    false
}

/// Whether pytest's capturing is off for tests (`-s`, alone or bundled, `--capture=no`) or
/// passes output through (`--capture=tee-sys`): then pytest shows what tests print as it
/// comes, and racefree passes units' output on. The last `--capture`/`-s` given wins.
pub fn capture_off(flags: &[String]) -> bool {
    let mut off = false;
    let mut iter = flags.iter();
    while let Some(flag) = iter.next() {
        let method = if flag == "--capture" {
            iter.next().map(String::as_str)
        } else if let Some(m) = flag.strip_prefix("--capture=") {
            Some(m)
        } else if is_short_bundle_with(flag, 's') {
            Some("no")
        } else {
            None
        };
        if let Some(method) = method {
            off = matches!(method, "no" | "tee-sys");
        }
    }
    off
}

/// Plugins' options that make every pytest process write one report file of the session
/// (pytest-html, pytest-json-report, pytest-reportlog, pytest-csv): under racefree each unit
/// writes it in turn, and it ends with the tests of the unit that ended last. Under
/// pytest-xdist their controller writes the whole run's; racefree has no such process for
/// plugins. One line each, naming the option and what holds the whole run instead.
pub fn single_session_reports(flags: &[String]) -> Vec<String> {
    let mut lines = Vec::new();
    for flag in flags {
        let name = option_name(flag);
        let plugin = match name {
            "--html" => "pytest-html",
            // (`--json-report-file` alone names the file; `--json-report` turns it on.)
            "--json-report" => "pytest-json-report",
            "--report-log" => "pytest-reportlog",
            "--csv" => "pytest-csv",
            _ => continue,
        };
        let line = format!(
            "{plugin}'s `{name}`: each of racefree's pytest processes writes that report for its own tests, so it will hold only the last one's; racefree's `--junit-xml` and `--events` hold the whole run"
        );
        if !lines.contains(&line) {
            lines.push(line);
        }
    }
    lines
}

/// pytest-rerunfailures's `--fail-on-flaky`: a pytest process whose tests passed only on a
/// rerun exits 7.
pub fn fails_on_flaky(flags: &[String]) -> bool {
    flags.iter().any(|f| f == "--fail-on-flaky")
}

/// True if pytest's arguments (addopts, then those after `--`) turn on pytest-xdist.
pub fn asks_for_xdist(flags: &[String]) -> bool {
    flags.iter().any(|f| {
        f == "-n"
            || f == "--numprocesses"
            || f.starts_with("--numprocesses=")
            || (f.starts_with("-n") && f.len() > 2 && !f.starts_with("--"))
            || f == "--dist"
            || f.starts_with("--dist=")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_plugins_that_write_one_session_file_are_named_once_each() {
        let f = |a: &[&str]| {
            single_session_reports(&a.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        };
        let lines = f(&[
            "--html=r.html",
            "-q",
            "--report-log",
            "log.jsonl",
            "--html=x.html",
        ]);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines[0].starts_with("pytest-html's `--html`"), "{lines:?}");
        assert!(lines[1].starts_with("pytest-reportlog's `--report-log`"));
        assert_eq!(f(&["--json-report"]).len(), 1);
        // Options that merely resemble them, or racefree's own report options, are not.
        assert!(f(&["--html-report", "--junit-xml=j.xml", "--csv-delimiter=;"]).is_empty());
    }

    #[test]
    fn junit_paths_expand_as_pythons_expandvars_and_expanduser() {
        let home = std::env::var("HOME").unwrap();
        assert_eq!(expand_path("$HOME/j.xml"), format!("{home}/j.xml"));
        assert_eq!(expand_path("${HOME}-x.xml"), format!("{home}-x.xml"));
        assert_eq!(
            expand_path("$RACEFREE_TEST_SURELY_UNSET/j.xml"),
            "$RACEFREE_TEST_SURELY_UNSET/j.xml"
        );
        assert_eq!(expand_path("a$"), "a$");
        assert_eq!(expand_path("${unclosed"), "${unclosed");
        assert_eq!(expand_path("~/j.xml"), format!("{home}/j.xml"));
        assert_eq!(expand_path("x~/j.xml"), "x~/j.xml");
    }

    #[test]
    fn junit_xml_is_the_last_one_given() {
        let f = |a: &[&str]| junit_xml(&a.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(f(&["-v"]), None);
        assert_eq!(f(&["--junitxml=a.xml"]), Some("a.xml".into()));
        assert_eq!(
            f(&["--junit-xml", "b.xml", "--junitxml=c.xml"]),
            Some("c.xml".into())
        );
        assert_eq!(f(&["--junitxml=a.xml", "--junitxml="]), Some(String::new()));
    }

    fn v(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn xdist_flags_are_recognized() {
        assert!(asks_for_xdist(&v(&["-n", "auto"])));
        assert!(asks_for_xdist(&v(&["-n4"])));
        assert!(asks_for_xdist(&v(&["--numprocesses=2"])));
        assert!(asks_for_xdist(&v(&["-ra", "--dist", "loadfile"])));
        assert!(!asks_for_xdist(&v(&["-ra", "--no-header", "-q"])));
        assert!(!asks_for_xdist(&v(&["--strict-markers"])));
    }

    #[test]
    fn exitfirst_and_maxfail_are_read_as_pytest_reads_them() {
        assert_eq!(maxfail(&v(&["-x"])), Some(1));
        assert_eq!(maxfail(&v(&["-ra", "-xvs"])), Some(1));
        assert_eq!(maxfail(&v(&["--exitfirst"])), Some(1));
        assert_eq!(maxfail(&v(&["--maxfail", "3"])), Some(3));
        assert_eq!(maxfail(&v(&["--maxfail=2", "-x"])), Some(1));
        // The last one given wins, as in pytest's parser.
        assert_eq!(maxfail(&v(&["-x", "--maxfail=4"])), Some(4));
        assert_eq!(maxfail(&v(&["-kx", "-m", "x"])), None);
        assert_eq!(maxfail(&v(&["-xrA"])), Some(1));
        assert_eq!(maxfail(&v(&["-rx"])), None);
        assert_eq!(maxfail(&v(&["--strict-markers", "-v"])), None);
    }

    #[test]
    fn capture_off_is_read_as_pytest_reads_it() {
        assert!(capture_off(&v(&["-s"])));
        assert!(capture_off(&v(&["-xsv"])));
        assert!(capture_off(&v(&["--capture=no"])));
        assert!(capture_off(&v(&["--capture", "tee-sys"])));
        assert!(!capture_off(&v(&["-s", "--capture=fd"])));
        assert!(!capture_off(&v(&["-ks", "-v"])));
        assert!(!capture_off(&v(&["-rs"])));
    }

    #[test]
    fn options_that_cannot_work_are_refused_by_name() {
        for flag in [
            "--co",
            "--collect-only",
            "--pdb",
            "--lf",
            "--sw",
            "--fixtures",
            "-V",
        ] {
            let err = refuse_unworkable(&v(&["-q", flag]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(&format!("`{flag}`")), "{err}");
        }
        let err = refuse_unworkable(&v(&["--cache-clear=yes"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("--cache-clear"), "{err}");
        assert!(refuse_unworkable(&v(&["-ra", "--setup-only", "--tb=short"])).is_ok());
    }
}
