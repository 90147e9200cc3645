//! Every fenced code block in README.md and docs/*.md is either run here or explicitly marked
//! as not run, with a reason. The convention (see docs/README.md) is in the fence's info string:
//!
//! - ```` ```sh test ````: run with bash (`set -e`); must exit 0, or N with `exit=N`.
//! - ```` ```console test ````: `$ command` lines, each followed by its expected output
//!   (stdout and stderr together). `[..]` in a line matches any text, a line `...` any number of
//!   lines; times like `1.23s` and runs of `=` are normalized. Every command must exit 0, the last
//!   one N with `exit=N`.
//! - ```` ```toml test ````: written as pyproject.toml beside the example suite; `racefree run
//!   --list-files` must accept it, and `racefree audit` must not call it a usage error.
//! - ```` ```python test expect=RF001 ```` (or `expect=none`): written as a test file;
//!   `racefree audit` must report exactly those rules.
//! - ```` ```json test kind=event|durations|lock-record ````: an event log line must have the keys
//!   a real run writes, a durations file must import, a lock record must have a real record's keys.
//! - ```` ```LANG norun: REASON ````: not run (a GitHub Actions file, `pip install` from PyPI).
//! - ```` ```rust,no_run ```` (docs/lock.md only): compiled by rustdoc, see racefree-lock's lib.rs.
//!
//! Besides the blocks: docs/audit.md must have a tested bad example and fix for every rule,
//! docs/configuration.md must list every key racefree accepts, and docs/events.md every field a
//! real run writes.
//!
//! Blocks of a page run in order in one scratch copy of examples/ (so a page reads as one
//! session), with `racefree` (this build) and `python`/`python3` (the test venv's) first on PATH,
//! HOME a scratch directory and `REPO_URL` a local git repository.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Every Markdown file whose code blocks are checked. A page missing here fails
/// `every_page_is_checked`.
const PAGES: &[&str] = &[
    "README.md",
    "docs/README.md",
    "docs/getting-started.md",
    "docs/run.md",
    "docs/isolation.md",
    "docs/lock.md",
    "docs/audit.md",
    "docs/ci.md",
    "docs/configuration.md",
    "docs/events.md",
    "docs/exit-codes.md",
];

const BLOCK_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug)]
struct Block {
    page: String,
    line: usize,
    info: String,
    text: String,
}

impl Block {
    fn lang(&self) -> &str {
        self.info
            .split([' ', ','])
            .next()
            .unwrap_or("")
            .trim_start_matches('{')
    }
    fn words(&self) -> Vec<&str> {
        self.info
            .split([' ', ','])
            .filter(|w| !w.is_empty())
            .collect()
    }
    fn attr(&self, key: &str) -> Option<&str> {
        self.words()
            .into_iter()
            .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
    }
    fn at(&self) -> String {
        format!("{}:{} (```{})", self.page, self.line, self.info)
    }
}

enum Kind {
    Test,
    NotRun,
    Rustdoc,
}

/// The fenced code blocks of a Markdown text (indented fences, as inside list items, included).
fn blocks(page: &str, text: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((i, line)) = lines.next() {
        let trimmed = line.trim_start();
        let Some(info) = trimmed.strip_prefix("```") else {
            continue;
        };
        let indent = line.len() - trimmed.len();
        let mut body = String::new();
        for (_, inner) in lines.by_ref() {
            if inner.trim() == "```" {
                break;
            }
            let inner = if inner.len() >= indent && inner[..indent].trim().is_empty() {
                &inner[indent..]
            } else {
                inner.trim_start()
            };
            body.push_str(inner);
            body.push('\n');
        }
        out.push(Block {
            page: page.to_owned(),
            line: i + 1,
            info: info.trim().to_owned(),
            text: body,
        });
    }
    out
}

fn classify(block: &Block) -> Result<Kind, String> {
    if let Some(pos) = block.info.find("norun:") {
        let reason = block.info[pos + "norun:".len()..].trim();
        if reason.is_empty() {
            return Err(format!("{}: `norun:` needs a reason", block.at()));
        }
        return Ok(Kind::NotRun);
    }
    let words = block.words();
    if block.lang() == "rust" && words.contains(&"no_run") {
        return Ok(Kind::Rustdoc);
    }
    if words.contains(&"test") {
        return Ok(Kind::Test);
    }
    Err(format!(
        "{}: every code block must be tested (`test` in its info string) or say why not \
         (`norun: REASON`); see the top of {}",
        block.at(),
        file!()
    ))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(common::workspace_root().join(rel))
        .unwrap_or_else(|e| panic!("cannot read {rel}: {e}"))
}

/// A scratch copy of examples/ with racefree and python on PATH.
struct Sandbox {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    work: PathBuf,
    path_var: String,
}

fn write_exe(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn run_quiet(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {out:?}");
}

impl Sandbox {
    fn new(with_git_repo: bool) -> Sandbox {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        let work = root.join("work");
        common::copy_dir(&common::workspace_root().join("examples"), &work);
        let bin = root.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(root.join("home")).unwrap();
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_racefree"), bin.join("racefree")).unwrap();
        // A wrapper, not a symlink: a venv's python finds its venv through the path it was
        // started by.
        let python = common::python();
        let wrapper = format!("#!/bin/sh\nexec '{}' \"$@\"\n", python.display());
        write_exe(&bin.join("python"), &wrapper);
        write_exe(&bin.join("python3"), &wrapper);
        // ./.venv/bin/python is racefree run's default interpreter, and what configuration
        // examples name.
        std::fs::create_dir_all(work.join(".venv/bin")).unwrap();
        write_exe(&work.join(".venv/bin/python"), &wrapper);
        let path_var = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        if with_git_repo {
            let repo = root.join("upstream");
            std::fs::create_dir_all(&repo).unwrap();
            let git = |args: &[&str]| {
                run_quiet(
                    Command::new("git")
                        .args(args)
                        .current_dir(&repo)
                        .env("HOME", root.join("home"))
                        .env("GIT_AUTHOR_NAME", "docs")
                        .env("GIT_AUTHOR_EMAIL", "docs@example.invalid")
                        .env("GIT_COMMITTER_NAME", "docs")
                        .env("GIT_COMMITTER_EMAIL", "docs@example.invalid"),
                )
            };
            git(&["init", "-q"]);
            std::fs::write(repo.join("README"), "upstream\n").unwrap();
            git(&["add", "README"]);
            git(&["commit", "-q", "-m", "first"]);
        }
        Sandbox {
            _tmp: tmp,
            root,
            work,
            path_var,
        }
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.current_dir(&self.work)
            .env("PATH", &self.path_var)
            .env("HOME", self.root.join("home"))
            .env(
                "REPO_URL",
                format!("file://{}", self.root.join("upstream").display()),
            )
            .env("NO_COLOR", "1")
            .env("COLUMNS", "100");
        for var in [
            "VIRTUAL_ENV",
            "RACEFREE_SHARD",
            "CI_NODE_INDEX",
            "CI_NODE_TOTAL",
            "BUILDKITE_PARALLEL_JOB",
            "BUILDKITE_PARALLEL_JOB_COUNT",
        ] {
            cmd.env_remove(var);
        }
        cmd
    }

    /// Runs a bash script in the work dir; (exit code, stdout and stderr merged).
    fn bash(&self, script: &str) -> (i32, String) {
        let mut cmd = self.command("bash");
        cmd.arg("-c")
            .arg(format!("exec 2>&1\n{script}"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = cmd.spawn().unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut stdout, &mut text).ok();
            text
        });
        let start = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if start.elapsed() > BLOCK_TIMEOUT {
                child.kill().ok();
                child.wait().ok();
                panic!("timed out after {BLOCK_TIMEOUT:?}:\n{script}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        (status.code().unwrap_or(-1), reader.join().unwrap())
    }
}

/// Times like `7.06s` become `#s`, runs of 3 or more `=` or `_` become 3, trailing spaces go.
fn normalize(line: &str) -> String {
    let chars: Vec<char> = line.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_ascii_digit() && (i == 0 || !chars[i - 1].is_ascii_alphanumeric()) {
            let mut j = i;
            while j < chars.len() && (chars[j].is_ascii_digit() || chars[j] == '.') {
                j += 1;
            }
            let number: String = chars[i..j].iter().collect();
            if number.contains('.') && chars.get(j) == Some(&'s') {
                out.push_str("#s");
                i = j + 1;
                continue;
            }
            out.push_str(&number);
            i = j;
            continue;
        }
        if c == '=' || c == '_' {
            // pytest pads its section lines to the terminal width.
            let mut j = i;
            while j < chars.len() && chars[j] == c {
                j += 1;
            }
            if j - i >= 3 {
                out.push_str(&format!("{c}{c}{c}"));
                i = j;
                continue;
            }
        }
        out.push(c);
        i += 1;
    }
    out.trim_end().to_owned()
}

/// `[..]` matches any text.
fn line_matches(expected: &str, actual: &str) -> bool {
    let parts: Vec<&str> = expected.split("[..]").collect();
    if parts.len() == 1 {
        return expected == actual;
    }
    let Some(mut rest) = actual.strip_prefix(parts[0]) else {
        return false;
    };
    for (k, part) in parts.iter().enumerate().skip(1) {
        if k == parts.len() - 1 {
            return rest.len() >= part.len() && rest.ends_with(part);
        }
        match rest.find(part) {
            Some(pos) => rest = &rest[pos + part.len()..],
            None => return false,
        }
    }
    true
}

/// Expected lines (with `...` lines matching any number of lines) against actual lines.
fn output_matches(expected: &[String], actual: &[String]) -> bool {
    match expected.split_first() {
        None => actual.is_empty(),
        Some((first, rest)) if first == "..." => {
            (0..=actual.len()).any(|skip| output_matches(rest, &actual[skip..]))
        }
        Some((first, rest)) => match actual.split_first() {
            Some((a, arest)) => line_matches(first, a) && output_matches(rest, arest),
            None => false,
        },
    }
}

fn exit_wanted(block: &Block) -> i32 {
    block.attr("exit").map_or(0, |v| v.parse().unwrap())
}

fn check_sh(sb: &Sandbox, block: &Block) {
    let (code, out) = sb.bash(&format!("set -e\n{}", block.text));
    assert_eq!(
        code,
        exit_wanted(block),
        "{}: exit code {code}; output:\n{out}",
        block.at()
    );
}

fn check_console(sb: &Sandbox, block: &Block) {
    let mut steps: Vec<(String, Vec<String>)> = Vec::new();
    for line in block.text.lines() {
        if let Some(cmd) = line.strip_prefix("$ ") {
            steps.push((cmd.to_owned(), Vec::new()));
        } else if let Some((_, expected)) = steps.last_mut() {
            expected.push(normalize(line));
        } else {
            panic!("{}: output before the first `$ ` command", block.at());
        }
    }
    assert!(!steps.is_empty(), "{}: no `$ ` command", block.at());
    let last = steps.len() - 1;
    for (k, (cmd, expected)) in steps.iter().enumerate() {
        let (code, out) = sb.bash(cmd);
        let want = if k == last { exit_wanted(block) } else { 0 };
        assert_eq!(
            code,
            want,
            "{}: `{cmd}` exited {code}; output:\n{out}",
            block.at()
        );
        let actual: Vec<String> = out.lines().map(normalize).collect();
        assert!(
            output_matches(expected, &actual),
            "{}: `{cmd}` printed\n{}\nbut the docs show\n{}",
            block.at(),
            actual.join("\n"),
            expected.join("\n")
        );
    }
}

fn check_toml(sb: &Sandbox, block: &Block) {
    let pyproject = sb.work.join("pyproject.toml");
    std::fs::write(&pyproject, &block.text).unwrap();
    let (code, out) = sb.bash("racefree run --list-files");
    assert_eq!(
        code,
        0,
        "{}: `racefree run --list-files` rejects it:\n{out}",
        block.at()
    );
    let (code, out) = sb.bash("racefree audit tests");
    assert!(
        code == 0 || code == 1,
        "{}: `racefree audit` rejects it (exit {code}):\n{out}",
        block.at()
    );
    std::fs::remove_file(pyproject).unwrap();
}

fn audit_rules(sb: &Sandbox, source: &str) -> (BTreeSet<String>, Value) {
    let dir = tempfile::tempdir_in(&sb.root).unwrap();
    std::fs::write(dir.path().join("test_example.py"), source).unwrap();
    let mut cmd = sb.command("racefree");
    let out = cmd
        .current_dir(dir.path())
        .args(["audit", "--format", "json", "--fail-on", "never"])
        .arg("test_example.py")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let rules = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["rule"].as_str().unwrap().to_owned())
        .collect();
    (rules, report)
}

fn check_python(sb: &Sandbox, block: &Block) {
    let expect = block.attr("expect").unwrap_or_else(|| {
        panic!(
            "{}: a python test block needs expect=RFxxx|none",
            block.at()
        )
    });
    let wanted: BTreeSet<String> = if expect == "none" {
        BTreeSet::new()
    } else {
        expect.split('+').map(str::to_owned).collect()
    };
    let (rules, report) = audit_rules(sb, &block.text);
    assert!(
        report["errors"].as_array().is_none_or(|e| e.is_empty()),
        "{}: racefree could not audit it: {}",
        block.at(),
        report["errors"]
    );
    assert_eq!(rules, wanted, "{}: audit found {report:#}", block.at());
}

/// Keys of every object, recursively, as dotted paths.
fn key_paths(value: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    if let Value::Object(map) = value {
        for (k, v) in map {
            let path = format!("{prefix}{k}");
            key_paths(v, &format!("{path}."), out);
            out.insert(path);
        }
    }
}

/// Event kind -> the keys real events of that kind have, from a run of the example suite.
fn real_event_keys(sb: &Sandbox) -> BTreeMap<String, BTreeSet<String>> {
    let (code, out) = sb.bash(
        "racefree run -q --no-history --events ev.ndjson >/dev/null && cat ev.ndjson && rm ev.ndjson",
    );
    assert_eq!(code, 0, "{out}");
    let mut keys: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in out.lines().filter(|l| l.starts_with('{')) {
        let event: Value = serde_json::from_str(line).unwrap();
        let mut set = BTreeSet::new();
        key_paths(&event, "", &mut set);
        keys.entry(event["event"].as_str().unwrap().to_owned())
            .or_default()
            .extend(set);
    }
    keys
}

fn check_json(sb: &Sandbox, block: &Block) {
    match block.attr("kind") {
        Some("event") => {
            let real = real_event_keys(sb);
            for line in block.text.lines().filter(|l| !l.trim().is_empty()) {
                let event: Value = serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("{}: not JSON ({e}): {line}", block.at()));
                assert_eq!(event["v"], 1, "{}", block.at());
                let kind = event["event"].as_str().unwrap();
                let mut shown = BTreeSet::new();
                key_paths(&event, "", &mut shown);
                // Nested objects in fields such as `sections` vary; compare top-level keys.
                let top = |s: &BTreeSet<String>| -> BTreeSet<String> {
                    s.iter().filter(|k| !k.contains('.')).cloned().collect()
                };
                let real_keys = real
                    .get(kind)
                    .unwrap_or_else(|| panic!("{}: a real run has no `{kind}`", block.at()));
                assert_eq!(
                    top(&shown),
                    top(real_keys),
                    "{}: the example's keys differ from a real `{kind}` event",
                    block.at()
                );
            }
        }
        Some("durations") => {
            std::fs::write(sb.work.join("docs-durations.json"), &block.text).unwrap();
            let (code, out) = sb.bash("racefree durations import docs-durations.json");
            assert_eq!(code, 0, "{}: import failed:\n{out}", block.at());
        }
        Some("lock-record") => {
            let shown: Value = serde_json::from_str(&block.text)
                .unwrap_or_else(|e| panic!("{}: not JSON: {e}", block.at()));
            let (code, out) = sb.bash("racefree lock record.lock -- cat record.lock");
            assert_eq!(code, 0, "{out}");
            let real: Value = serde_json::from_str(out.trim()).unwrap();
            let (mut a, mut b) = (BTreeSet::new(), BTreeSet::new());
            key_paths(&shown, "", &mut a);
            key_paths(&real, "", &mut b);
            assert_eq!(
                a,
                b,
                "{}: keys differ from a real record {real}",
                block.at()
            );
        }
        other => panic!("{}: unknown json kind {other:?}", block.at()),
    }
}

fn check_page(page: &str) {
    let text = read(page);
    let blocks = blocks(page, &text);
    let mut tested = Vec::new();
    for block in &blocks {
        match classify(block) {
            Ok(Kind::Test) => tested.push(block),
            Ok(Kind::NotRun) => {}
            Ok(Kind::Rustdoc) => {
                let lib = read("crates/racefree-lock/src/lib.rs");
                assert!(
                    page == "docs/lock.md" && lib.contains("docs/lock.md"),
                    "{}: only docs/lock.md's Rust is compiled (as racefree-lock doctests)",
                    block.at()
                );
            }
            Err(e) => panic!("{e}"),
        }
    }
    if tested.is_empty() {
        return;
    }
    let sb = Sandbox::new(text.contains("REPO_URL"));
    for block in tested {
        match block.lang() {
            "sh" => check_sh(&sb, block),
            "console" => check_console(&sb, block),
            "toml" => check_toml(&sb, block),
            "python" => check_python(&sb, block),
            "json" => check_json(&sb, block),
            other => panic!("{}: no test runner for `{other}` blocks", block.at()),
        }
    }
}

macro_rules! page_tests {
    ($($name:ident => $page:expr,)*) => {
        $(#[test] fn $name() { check_page($page); })*
        const TESTED_PAGES: &[&str] = &[$($page),*];
    };
}

page_tests! {
    readme => "README.md",
    docs_index => "docs/README.md",
    getting_started => "docs/getting-started.md",
    run_md => "docs/run.md",
    isolation_md => "docs/isolation.md",
    lock_md => "docs/lock.md",
    audit_md => "docs/audit.md",
    ci_md => "docs/ci.md",
    configuration_md => "docs/configuration.md",
    events_md => "docs/events.md",
    exit_codes_md => "docs/exit-codes.md",
}

#[test]
fn every_page_is_checked() {
    let mut found: Vec<String> = std::fs::read_dir(common::workspace_root().join("docs"))
        .unwrap()
        .map(|e| format!("docs/{}", e.unwrap().file_name().to_string_lossy()))
        .filter(|p| p.ends_with(".md"))
        .collect();
    found.push("README.md".into());
    found.sort();
    let mut listed: Vec<String> = PAGES.iter().map(|p| p.to_string()).collect();
    listed.sort();
    assert_eq!(
        found,
        listed,
        "add new pages to PAGES and page_tests! in {}",
        file!()
    );
    let mut tested: Vec<String> = TESTED_PAGES.iter().map(|p| p.to_string()).collect();
    tested.sort();
    assert_eq!(tested, listed);
}

#[test]
fn the_checker_can_fail() {
    // An unmarked block, and a norun without a reason, are refused.
    let bad = blocks("x.md", "t\n\n```sh\nls\n```\n\n```yaml norun:\na: b\n```\n");
    assert!(classify(&bad[0]).is_err());
    assert!(classify(&bad[1]).is_err());
    let good = blocks("x.md", "  ```yaml norun: GitHub only\n  a: b\n  ```\n");
    assert!(matches!(classify(&good[0]), Ok(Kind::NotRun)));
    assert_eq!(good[0].text, "a: b\n");
    // Output matching.
    let lines = |s: &str| -> Vec<String> { s.lines().map(normalize).collect() };
    assert!(output_matches(
        &lines("a [..] c\n...\n=== 3 passed in 1.20s ==="),
        &lines("a b c\nx\ny\n===== 3 passed in 17.5s =====")
    ));
    assert!(!output_matches(&lines("3 passed"), &lines("4 passed")));
    assert!(!output_matches(&lines("a\n..."), &lines("b\na")));
    // A config the runner does not know fails the toml check; a wrong expectation the
    // python check.
    let sb = Sandbox::new(false);
    let typo = Block {
        page: "x.md".into(),
        line: 1,
        info: "toml test".into(),
        text: "[tool.racefree]\nwrokers = 2\n".into(),
    };
    assert!(std::panic::catch_unwind(|| check_toml(&sb, &typo)).is_err());
    let clean = Block {
        page: "x.md".into(),
        line: 1,
        info: "python test expect=RF001".into(),
        text: "def test_x(tmp_path):\n    open(tmp_path / 'x', 'w')\n".into(),
    };
    assert!(std::panic::catch_unwind(|| check_python(&sb, &clean)).is_err());
}

#[test]
fn audit_md_documents_every_rule_with_a_bad_example_and_a_fix() {
    // The rules as racefree knows them: SARIF lists every rule with its default level.
    let sb = Sandbox::new(false);
    let (code, out) = sb.bash("racefree audit --format sarif tests/api");
    assert_eq!(code, 0, "{out}");
    let sarif: Value = serde_json::from_str(&out).unwrap();
    let rules = sarif["runs"][0]["tool"]["driver"]["rules"]
        .as_array()
        .unwrap();
    assert!(rules.len() >= 6, "{rules:?}");
    let page = read("docs/audit.md");
    let all = blocks("docs/audit.md", &page);
    for rule in rules {
        let id = rule["id"].as_str().unwrap();
        let name = rule["name"].as_str().unwrap();
        let level = rule["defaultConfiguration"]["level"].as_str().unwrap();
        let row = format!("| {id} | `{name}` | {level} |");
        assert!(
            page.contains(&row),
            "docs/audit.md's rule table lacks `{row}`"
        );
        let heading = format!("### {id} `{name}`");
        let start = page
            .find(&heading)
            .unwrap_or_else(|| panic!("docs/audit.md has no section `{heading}`"));
        // The section ends at the next heading of level 2 or 3.
        let after = start + heading.len();
        let end = ["\n## ", "\n### "]
            .iter()
            .filter_map(|h| page[after..].find(h))
            .min()
            .map_or(page.len(), |e| after + e);
        let line_of = |offset: usize| page[..offset].lines().count() + 1;
        let (first, last) = (line_of(start), line_of(end));
        let in_section: Vec<&Block> = all
            .iter()
            .filter(|b| b.line >= first && b.line < last)
            .collect();
        assert!(
            in_section
                .iter()
                .any(|b| b.attr("expect") == Some(id) && b.words().contains(&"test")),
            "docs/audit.md's {id} section has no tested bad example (```python test expect={id})"
        );
        assert!(
            in_section
                .iter()
                .any(|b| b.attr("expect") == Some("none") && b.words().contains(&"test")),
            "docs/audit.md's {id} section has no tested fix (```python test expect=none)"
        );
    }
}

/// The keys a table accepts, from racefree's own "unknown field `x`, expected one of ..." error
/// (so a key added to the code without docs fails the test below).
fn accepted_keys(sb: &Sandbox, table: &str, command: &str) -> BTreeSet<String> {
    std::fs::write(
        sb.work.join("pyproject.toml"),
        format!("{table}\nno-such-key = 1\n"),
    )
    .unwrap();
    let (code, out) = sb.bash(command);
    std::fs::remove_file(sb.work.join("pyproject.toml")).unwrap();
    assert_eq!(code, 4, "`{command}` accepted an unknown key:\n{out}");
    // miette wraps the message; undo the wrapping before reading the backticked names.
    let joined: String = out
        .lines()
        .map(|l| l.trim_start().trim_start_matches(['×', '│']).trim())
        .collect::<Vec<_>>()
        .join(" ")
        .replace("- ", "-");
    let list = joined
        .split("expected one of")
        .nth(1)
        .unwrap_or_else(|| panic!("no key list in:\n{out}"));
    list.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .take_while(|k| !k.contains(' '))
        .collect()
}

#[test]
fn configuration_md_lists_every_key() {
    let sb = Sandbox::new(false);
    let page = read("docs/configuration.md");
    let mut missing = Vec::new();
    for (table, command, section) in [
        (
            "[tool.racefree]",
            "racefree run --list-files",
            "## `[tool.racefree]`",
        ),
        (
            "[tool.racefree.audit]",
            "racefree audit tests",
            "## `[tool.racefree.audit]`",
        ),
    ] {
        let start = page
            .find(section)
            .unwrap_or_else(|| panic!("docs/configuration.md has no `{section}` section"));
        let body = &page[start..];
        let body = &body[..body[3..].find("\n## ").map_or(body.len(), |e| e + 3)];
        let keys = accepted_keys(&sb, table, command);
        assert!(keys.len() >= 5, "{table}: {keys:?}");
        for key in keys {
            // `audit` is the sub-table, `junit_xml` an alias documented beside `junit-xml`.
            if key == "audit" && table == "[tool.racefree]" {
                continue;
            }
            if !body.contains(&format!("| `{key}`")) && !body.contains(&format!("(or `{key}`)")) {
                missing.push(format!("{table} {key}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "keys racefree accepts but docs/configuration.md's tables do not list:\n  {}",
        missing.join("\n  ")
    );
}

#[test]
fn events_md_lists_every_field() {
    let sb = Sandbox::new(false);
    let real = real_event_keys(&sb);
    let page = read("docs/events.md");
    let backticked = |text: &str| -> BTreeSet<String> {
        text.split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect()
    };
    let mut missing = Vec::new();
    for (event, keys) in &real {
        let row = page
            .lines()
            .find(|l| l.starts_with(&format!("| `{event}` |")))
            .unwrap_or_else(|| panic!("docs/events.md's event table has no row for `{event}`"));
        let mut documented = backticked(row);
        if event == "test_finished" {
            // Its fields have their own table: the first cell of each row.
            for line in page.lines().filter(|l| l.starts_with("| `")) {
                documented.extend(backticked(line.split('|').nth(1).unwrap_or("")));
            }
        }
        for key in keys.iter().filter(|k| !k.contains('.')) {
            if !["v", "t", "event"].contains(&key.as_str()) && !documented.contains(key) {
                missing.push(format!("{event}.{key}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "fields a real run writes that docs/events.md does not document:\n  {}",
        missing.join("\n  ")
    );
}

/// `racefree ...` command lines in a block: lines ending in `\` are joined, and so are the
/// indented `--flag` lines that continue a command in YAML.
fn racefree_command_lines(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut continuing = false;
    for line in text.lines() {
        let trimmed = line.trim();
        if continuing || (trimmed.starts_with("--") && !out.is_empty() && line.starts_with(' ')) {
            if let Some(last) = out.last_mut() {
                last.push(' ');
                last.push_str(trimmed.trim_end_matches('\\'));
                continuing = trimmed.ends_with('\\');
                continue;
            }
        }
        if let Some(pos) = line.find("racefree ") {
            let before = &line[..pos];
            if before.is_empty() || before.ends_with([' ', '(', '$', '|', '&', ';', '`', '-']) {
                out.push(line[pos..].trim_end_matches('\\').to_owned());
                continuing = trimmed.ends_with('\\');
            }
        }
    }
    out
}

#[test]
fn every_flag_in_every_example_exists() {
    // Also in the blocks that are not run (CI files): a flag racefree does not have fails here.
    let top = Command::new(env!("CARGO_BIN_EXE_racefree"))
        .arg("--help")
        .output()
        .unwrap();
    let top = String::from_utf8(top.stdout).unwrap();
    let known: BTreeSet<&str> = [
        "run",
        "lock",
        "audit",
        "clean",
        "history",
        "plan",
        "durations",
    ]
    .into_iter()
    .filter(|c| top.contains(&format!("\n  {c} ")))
    .collect();
    assert_eq!(known.len(), 7, "{top}");
    let mut help_cache: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut bad = Vec::new();
    for page in PAGES {
        for block in blocks(page, &read(page)) {
            // A block that shows a usage error (exit 4) may use a flag that does not exist.
            if block.attr("exit") == Some("4") {
                continue;
            }
            for line in racefree_command_lines(&block.text) {
                let words: Vec<&str> = line.split_whitespace().collect();
                let Some(&sub) = words.get(1) else { continue };
                if !known.contains(sub) {
                    continue;
                }
                let mut command = vec![sub];
                if let Some(&second) = words.get(2)
                    && matches!(
                        (sub, second),
                        ("lock", "status" | "break") | ("durations", "export" | "import")
                    )
                {
                    command.push(second);
                }
                let key = command.join(" ");
                let flags = help_cache.entry(key.clone()).or_insert_with(|| {
                    let out = Command::new(env!("CARGO_BIN_EXE_racefree"))
                        .args(&command)
                        .arg("--help")
                        .output()
                        .unwrap();
                    let mut flags = common::help_flags(&String::from_utf8(out.stdout).unwrap());
                    flags.insert("--help".into());
                    flags.insert("--version".into());
                    flags
                });
                // Flags after `--` (or a lock's -c) belong to pytest or to the command.
                let mut scanned = String::new();
                for w in &words[2..] {
                    if *w == "--" || *w == "-c" || *w == "--command" {
                        break;
                    }
                    scanned.push_str(w);
                    scanned.push(' ');
                }
                for flag in common::long_flags(&scanned) {
                    if !flags.contains(&flag) {
                        bad.push(format!("{}: `racefree {key}` has no {flag}", block.at()));
                    }
                }
            }
        }
    }
    assert!(
        bad.is_empty(),
        "examples use flags racefree does not have:\n  {}",
        bad.join("\n  ")
    );
}

#[test]
fn command_lines_are_found() {
    let yaml = "    - racefree plan --shards \"$SHARDS\" --format lines\n        \
                --durations-file x.json > plan.tsv\n  run: |\n    m=$(racefree plan \\\n      \
                --no-history)\n# racefree: ignore\n";
    assert_eq!(
        racefree_command_lines(yaml),
        vec![
            "racefree plan --shards \"$SHARDS\" --format lines --durations-file x.json > plan.tsv"
                .to_owned(),
            "racefree plan  --no-history)".to_owned(),
        ]
    );
}

/// GitHub's anchor for a heading: lower case, punctuation other than `-` and `_` dropped, spaces
/// to `-`.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

fn anchors(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut in_fence = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
        } else if !in_fence && line.starts_with('#') {
            out.insert(slug(line.trim_start_matches('#')));
        }
    }
    out
}

#[test]
fn links_between_pages_resolve() {
    let root = common::workspace_root();
    let mut broken = Vec::new();
    for page in PAGES {
        let text = read(page);
        let dir = Path::new(page).parent().unwrap_or(Path::new(""));
        for (n, line) in text.lines().enumerate() {
            for part in line.split("](").skip(1) {
                let Some(end) = part.find(')') else { continue };
                let target = &part[..end];
                if target.contains("://") || target.starts_with("mailto:") {
                    continue;
                }
                let (file, anchor) = target.split_once('#').unwrap_or((target, ""));
                // `..` resolved by hand: the target may not exist.
                let mut path = root.clone();
                let joined = if file.is_empty() {
                    PathBuf::from(page)
                } else {
                    dir.join(file)
                };
                for c in joined.components() {
                    match c {
                        std::path::Component::ParentDir => {
                            path.pop();
                        }
                        std::path::Component::Normal(p) => path.push(p),
                        _ => {}
                    }
                }
                // Links out of the repository (../shared/DESIGN.md) are not checked.
                if !path.starts_with(&root) {
                    continue;
                }
                if !path.exists() {
                    broken.push(format!("{page}:{}: {target} (no such file)", n + 1));
                    continue;
                }
                if anchor.is_empty() || path.is_dir() {
                    continue;
                }
                if path.extension().is_some_and(|e| e == "md") {
                    let target_text = std::fs::read_to_string(&path).unwrap();
                    if !anchors(&target_text).contains(anchor) {
                        broken.push(format!("{page}:{}: {target} (no such heading)", n + 1));
                    }
                }
            }
        }
    }
    assert!(
        broken.is_empty(),
        "broken links:\n  {}",
        broken.join("\n  ")
    );
    assert_eq!(slug(" `racefree clean`"), "racefree-clean");
    assert_eq!(
        slug(" 3. Lessons the incidents teach (keep these)"),
        "3-lessons-the-incidents-teach-keep-these"
    );
}
