#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The documentation keeps up with the command line: every flag `racefree run --help` shows
//! is described in docs/run.md.

use std::process::Command;

use assert_cmd::cargo::CommandCargoExt;

mod common;

/// The flags (`-n`, `--workers`, ...) listed in a clap help text.
fn flags(help: &str) -> Vec<String> {
    help.lines()
        .map(str::trim_start)
        .filter(|l| l.starts_with('-'))
        .flat_map(|l| {
            l.split([' ', ','])
                .take_while(|w| w.is_empty() || w.starts_with('-'))
                .filter(|w| !w.is_empty())
                .map(|w| w.trim_end_matches("...").to_string())
                .collect::<Vec<_>>()
        })
        .filter(|f| !matches!(f.as_str(), "-h" | "--help" | "-V" | "--version"))
        .collect()
}

/// Whether `doc` mentions `flag` as a whole word.
fn mentions(doc: &str, flag: &str) -> bool {
    doc.match_indices(flag).any(|(i, _)| {
        let before = doc[..i].chars().next_back();
        let after = doc[i + flag.len()..].chars().next();
        !before.is_some_and(|c| c.is_alphanumeric() || c == '-')
            && !after.is_some_and(|c| c.is_alphanumeric() || c == '-' || c == '_')
    })
}

#[test]
fn every_run_flag_is_in_docs_run_md() {
    let out = Command::cargo_bin("racefree")
        .unwrap()
        .args(["run", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    let flags = flags(&help);
    assert!(flags.contains(&"--isolate".to_string()), "{flags:?}");
    assert!(
        flags.contains(&"--private-network".to_string()),
        "{flags:?}"
    );
    let doc = std::fs::read_to_string(common::workspace_root().join("docs/run.md")).unwrap();
    let missing: Vec<&String> = flags.iter().filter(|f| !mentions(&doc, f)).collect();
    assert!(missing.is_empty(), "docs/run.md lacks {missing:?}");
}

#[test]
fn flag_parsing_in_this_test_is_sound() {
    let help =
        "  -n, --workers <N|auto>\n      --lf\n  -q, --quiet...\n          text --not-a-flag\n";
    assert_eq!(flags(help), ["-n", "--workers", "--lf", "-q", "--quiet"]);
    assert!(mentions("| `-x, --exitfirst` |", "-x"));
    assert!(!mentions("--durations-file", "--durations"));
}
