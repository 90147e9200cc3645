//! The help racefree prints and the user guide in docs/ must agree, and the help must fit on a
//! screen. For every command (found by walking `racefree --help`, so a new subcommand cannot be
//! missed):
//!
//! - `-h` and `--help` each fit in 50 lines of at most 100 columns, and list the same flags;
//! - every long flag in its help appears in the options section of its docs page;
//! - every flag a docs page's options section lists exists in the help of a command it documents
//!   (docs cannot describe removed flags);
//! - text about `racefree run` flags not implemented yet is marked `<!-- planned: --flag -->`,
//!   and fails here once the flag exists, so the placeholder gets rewritten.
//!
//! An options section is a Markdown section whose heading starts with "Options" (it runs until the
//! next heading of the same or a higher level). Its flags are the `--flags` in the first cell of
//! each table row, or at the start of each list item (`- `--flag N`: meaning`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::{help_flags, long_flags};

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

const MAX_LINES: usize = 50;
const MAX_COLUMNS: usize = 100;

/// Which docs page documents each command's flags. A command missing here fails the test.
const COMMAND_PAGES: &[(&str, &str)] = &[
    ("run", "docs/run.md"),
    ("clean", "docs/run.md"),
    ("history", "docs/run.md"),
    ("lock", "docs/lock.md"),
    ("lock status", "docs/lock.md"),
    ("lock break", "docs/lock.md"),
    ("audit", "docs/audit.md"),
    ("plan", "docs/ci.md"),
    ("durations", "docs/ci.md"),
    ("durations export", "docs/ci.md"),
    ("durations import", "docs/ci.md"),
];

/// Pages whose options sections may also list flags of commands documented elsewhere
/// (docs/ci.md explains `racefree run`'s sharding flags).
const ALSO_LISTS: &[(&str, &str)] = &[("docs/ci.md", "run")];

fn help(command: &str, flag: &str) -> String {
    let mut args: Vec<&str> = command.split_whitespace().collect();
    args.push(flag);
    let out = Command::new(env!("CARGO_BIN_EXE_racefree"))
        .args(&args)
        // What a 100-column terminal shows (clap wraps to the terminal width).
        .env("COLUMNS", "100")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "racefree {} exited {:?}",
        args.join(" "),
        out.status
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The subcommand names listed in a help text's `Commands:` section (without `help`).
fn subcommands(help: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut inside = false;
    for line in help.lines() {
        if line == "Commands:" {
            inside = true;
            continue;
        }
        if inside {
            if line.is_empty() || !line.starts_with("  ") {
                break;
            }
            // Continuation lines of a wrapped description are indented further.
            if line.starts_with("   ") {
                continue;
            }
            let name = line.split_whitespace().next().unwrap().to_owned();
            if name != "help" {
                names.push(name);
            }
        }
    }
    names
}

/// Every command path: "" (the top level), "run", "lock status", ...
fn all_commands() -> Vec<String> {
    let mut out = vec![String::new()];
    let mut i = 0;
    while i < out.len() {
        let parent = out[i].clone();
        for sub in subcommands(&help(&parent, "--help")) {
            out.push(format!("{parent} {sub}").trim().to_owned());
        }
        i += 1;
    }
    out
}

/// The flags listed in a page's options sections (see the module comment).
fn page_option_flags(page: &str) -> BTreeSet<String> {
    let mut flags = BTreeSet::new();
    let mut level: Option<usize> = None;
    let mut in_fence = false;
    for line in page.lines() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
            continue;
        }
        if in_fence {
            continue;
        }
        let hashes = line.chars().take_while(|&c| c == '#').count();
        if hashes > 0 && line[hashes..].starts_with(' ') {
            let title = line[hashes..].trim();
            if level.is_some_and(|l| hashes <= l) {
                level = None;
            }
            if title.starts_with("Options") {
                level = Some(hashes);
            }
            continue;
        }
        if level.is_none() {
            continue;
        }
        let trimmed = line.trim_start();
        if let Some(row) = trimmed.strip_prefix('|') {
            let first_cell = row.split('|').next().unwrap_or("");
            flags.extend(long_flags(first_cell));
        } else if let Some(item) = trimmed
            .strip_prefix("- ")
            .or_else(|| trimmed.strip_prefix("* "))
        {
            // The leading code spans of a list item name the flag: "- `--timeout SECS`: ...".
            let mut rest = item.trim_start();
            while let Some(after) = rest.strip_prefix('`') {
                let Some(end) = after.find('`') else { break };
                flags.extend(long_flags(&after[..end]));
                rest = after[end + 1..].trim_start_matches([',', ' ']);
            }
        }
    }
    flags
}

fn read_page(page: &str) -> String {
    std::fs::read_to_string(common::workspace_root().join(page))
        .unwrap_or_else(|e| panic!("cannot read {page}: {e}"))
}

#[test]
fn help_fits_on_a_screen_and_h_matches_help() {
    for command in all_commands() {
        let short = help(&command, "-h");
        let long = help(&command, "--help");
        for (flag, text) in [("-h", &short), ("--help", &long)] {
            let lines: Vec<&str> = text.lines().collect();
            assert!(
                lines.len() <= MAX_LINES,
                "`racefree {command} {flag}` is {} lines (at most {MAX_LINES}); shorten the help \
                 texts to one line each and move details to docs/:\n{text}",
                lines.len()
            );
            for line in lines {
                assert!(
                    line.chars().count() <= MAX_COLUMNS,
                    "`racefree {command} {flag}` has a line over {MAX_COLUMNS} columns:\n{line}"
                );
            }
        }
        assert_eq!(
            help_flags(&short),
            help_flags(&long),
            "`racefree {command} -h` and `--help` list different flags"
        );
    }
}

#[test]
fn every_flag_in_help_is_in_its_docs_page() {
    let pages: BTreeMap<&str, &str> = COMMAND_PAGES.iter().copied().collect();
    let mut missing = Vec::new();
    for command in all_commands() {
        if command.is_empty() {
            continue;
        }
        let Some(page) = pages.get(command.as_str()) else {
            panic!(
                "`racefree {command}` has no docs page: document it and add it to COMMAND_PAGES \
                 in {}",
                file!()
            );
        };
        let documented = page_option_flags(&read_page(page));
        for flag in help_flags(&help(&command, "--help")) {
            if !documented.contains(&flag) {
                missing.push(format!("{flag} (racefree {command}) in {page}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "flags in the help but not in the options section of their docs page:\n  {}",
        missing.join("\n  ")
    );
}

#[test]
fn every_flag_in_the_docs_exists() {
    let mut by_page: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    let also = ALSO_LISTS.iter().map(|&(page, command)| (command, page));
    for (command, page) in COMMAND_PAGES.iter().copied().chain(also) {
        by_page
            .entry(page)
            .or_default()
            .extend(help_flags(&help(command, "--help")));
    }
    let mut stale = Vec::new();
    for (page, flags) in &by_page {
        let listed = page_option_flags(&read_page(page));
        assert!(!listed.is_empty(), "{page} has no options section");
        for flag in listed.difference(flags) {
            stale.push(format!("{flag} in {page}"));
        }
    }
    assert!(
        stale.is_empty(),
        "flags the docs list that no documented command has (removed or misspelt?):\n  {}",
        stale.join("\n  ")
    );
}

#[test]
fn the_parsers_find_what_they_should() {
    // These checks keep the two tests above able to fail.
    assert_eq!(
        long_flags("  -w, --timeout <SECS>  Wait; see --mode, not x--y or ---"),
        BTreeSet::from(["--timeout".to_owned(), "--mode".to_owned()])
    );
    let page = "# t\n\n| `--a` | x `--not-me` |\n\n## Options\n\n| flag | meaning |\n|---|---|\n\
                | `-n`, `--workers N` | uses `--other` |\n- `--timeout SECS`, `--kill-grace S`: \
                text `--not-me`\n\n```\n--in-fence\n```\n### Options too\n\n| `--deep` | |\n\n\
                ## After\n\n| `--after` | |\n";
    assert_eq!(
        page_option_flags(page),
        BTreeSet::from([
            "--workers".to_owned(),
            "--timeout".to_owned(),
            "--kill-grace".to_owned(),
            "--deep".to_owned(),
        ])
    );
    let help = "Usage: x\n\nCommands:\n  status  Show\n          more\n  help  h\n\nOptions:\n  \
                -x, --exclusive  Take [alias: --ex]\n  -h, --help  Print help\n";
    assert_eq!(subcommands(help), vec!["status".to_owned()]);
    assert_eq!(
        help_flags(help),
        BTreeSet::from(["--exclusive".to_owned(), "--ex".to_owned()])
    );
}

#[test]
fn version_is_the_workspace_version() {
    let manifest = read_page("Cargo.toml");
    let doc: toml::Table = manifest.parse().unwrap();
    let version = doc["workspace"]["package"]["version"].as_str().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_racefree"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        format!("racefree {version}")
    );
    // The wheel takes its version from Cargo too (maturin), never a second copy.
    let pyproject: toml::Table = read_page("pyproject.toml").parse().unwrap();
    let project = pyproject["project"].as_table().unwrap();
    assert!(
        project.get("version").is_none(),
        "pyproject.toml must not set [project] version; it comes from Cargo"
    );
    assert!(
        project["dynamic"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v.as_str() == Some("version")),
        "pyproject.toml must declare the version dynamic"
    );
}

#[test]
fn placeholders_for_planned_flags_are_replaced_once_the_flags_exist() {
    // Text about `racefree run` flags that do not exist yet carries
    // `<!-- planned: --flag ... -->`; once `racefree run` has one of those flags, the text must
    // be rewritten (and the marker removed).
    let existing = help_flags(&help("run", "--help"));
    let mut stale = Vec::new();
    let docs = common::workspace_root().join("docs");
    for entry in std::fs::read_dir(&docs).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for (n, line) in text.lines().enumerate() {
            let Some((_, rest)) = line.split_once("<!-- planned:") else {
                continue;
            };
            let planned = long_flags(rest.split('(').next().unwrap_or(rest));
            assert!(
                !planned.is_empty(),
                "{}:{}: a planned marker names no flag",
                path.display(),
                n + 1
            );
            for flag in planned.intersection(&existing) {
                stale.push(format!("{}:{}: {flag} exists now", path.display(), n + 1));
            }
        }
    }
    assert!(
        stale.is_empty(),
        "docs text marked as planned describes flags that now exist; rewrite it:\n  {}",
        stale.join("\n  ")
    );
}
