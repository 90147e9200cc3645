#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `racefree audit` end to end: exit codes, formats, suppression, configuration, discovery.

use std::path::Path;

use assert_cmd::Command;
use predicates::prelude::*;
use serde_json::Value;

const UNSAFE: &str = "import os\n\ndef test_report():\n    with open(\"/tmp/report.txt\", \"w\") as f:\n        f.write(\"x\")\n";
const WARN_ONLY: &str = "import os\n\ndef test_env():\n    os.environ[\"MODE\"] = \"x\"\n";
const SAFE: &str =
    "def test_report(tmp_path):\n    (tmp_path / \"report.txt\").write_text(\"x\")\n";

fn project(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    dir
}

fn audit(dir: &Path) -> Command {
    let mut cmd = Command::cargo_bin("racefree").unwrap();
    cmd.current_dir(dir).arg("audit").env_remove("NO_COLOR");
    cmd
}

#[test]
fn clean_suite_exits_0() {
    let p = project(&[("tests/test_ok.py", SAFE)]);
    audit(p.path())
        .assert()
        .code(0)
        .stdout(predicate::str::contains("No findings in 1 file"));
}

#[test]
fn finding_exits_1_and_shows_file_line_and_fix() {
    let p = project(&[("tests/test_bad.py", UNSAFE), ("tests/test_ok.py", SAFE)]);
    audit(p.path())
        .assert()
        .code(1)
        .stdout(predicate::str::contains("tests/test_bad.py"))
        .stdout(predicate::str::contains("4:10  error[RF001]"))
        .stdout(predicate::str::contains(
            "with open(\"/tmp/report.txt\", \"w\") as f:",
        ))
        .stdout(predicate::str::contains("fix: use the `tmp_path` fixture"))
        // Not a terminal: no colour codes.
        .stdout(predicate::str::contains("\x1b[").not());
}

#[test]
fn colour_only_when_asked_or_on_a_terminal() {
    let p = project(&[("test_bad.py", UNSAFE)]);
    audit(p.path())
        .arg("--color=always")
        .assert()
        .code(1)
        .stdout(predicate::str::contains("\x1b[1;31merror"));
}

#[test]
fn fail_on_controls_the_exit_code() {
    let p = project(&[("test_env.py", WARN_ONLY)]);
    audit(p.path()).assert().code(1);
    audit(p.path())
        .args(["--fail-on", "error"])
        .assert()
        .code(0)
        .stdout(predicate::str::contains("RF004"));
    audit(p.path())
        .args(["--fail-on", "never"])
        .assert()
        .code(0);
    let p = project(&[("test_bad.py", UNSAFE)]);
    audit(p.path())
        .args(["--fail-on", "error"])
        .assert()
        .code(1);
}

#[test]
fn usage_errors_exit_4_with_a_clear_message() {
    let p = project(&[("test_ok.py", SAFE)]);
    audit(p.path())
        .arg("no/such/dir")
        .assert()
        .code(4)
        .stderr(predicate::str::contains("no/such/dir"))
        .stderr(predicate::str::contains("does not exist"));
    audit(p.path())
        .args(["--format", "xml"])
        .assert()
        .code(4)
        .stderr(predicate::str::contains("sarif"));
    audit(p.path())
        .args(["--fail-on", "fatal"])
        .assert()
        .code(4);
    audit(p.path())
        .args(["--config", "missing.toml"])
        .assert()
        .code(4)
        .stderr(predicate::str::contains("missing.toml"));
}

#[test]
fn bad_config_key_names_the_key_and_file() {
    let p = project(&[
        ("test_ok.py", SAFE),
        (
            "pyproject.toml",
            "[tool.racefree.audit]\ndisabled = [\"RF001\"]\n",
        ),
    ]);
    audit(p.path())
        .assert()
        .code(4)
        .stderr(predicate::str::contains("pyproject.toml"))
        .stderr(predicate::str::contains("disabled"));
    let p = project(&[
        ("test_ok.py", SAFE),
        (
            "pyproject.toml",
            "[tool.racefree.audit]\ndisable = [\"RF999\"]\n",
        ),
    ]);
    audit(p.path())
        .assert()
        .code(4)
        .stderr(predicate::str::contains("RF999"))
        .stderr(predicate::str::contains("RF001"));
}

#[test]
fn other_racefree_and_tool_tables_are_left_alone() {
    let p = project(&[
        ("test_ok.py", SAFE),
        (
            "pyproject.toml",
            "[tool.racefree]\nworkers = 4\n[tool.ruff]\nline-length = 100\n[project]\nname = \"x\"\n",
        ),
    ]);
    audit(p.path()).assert().code(0);
}

#[test]
fn json_output() {
    let p = project(&[("tests/test_bad.py", UNSAFE)]);
    let out = audit(p.path())
        .args(["--format", "json"])
        .assert()
        .code(1)
        .get_output()
        .stdout
        .clone();
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["version"], 1);
    assert_eq!(v["files_audited"], 1);
    let f = &v["findings"][0];
    assert_eq!(f["rule"], "RF001");
    assert_eq!(f["name"], "shared-location-write");
    assert_eq!(f["severity"], "error");
    assert_eq!(f["path"], "tests/test_bad.py");
    assert_eq!(f["line"], 4);
    assert_eq!(f["column"], 10);
    assert!(f["fix"].as_str().unwrap().contains("tmp_path"));
    assert_eq!(v["summary"]["error"], 1);
}

#[test]
fn sarif_output_for_code_scanning() {
    let p = project(&[
        ("tests/test_bad.py", UNSAFE),
        ("tests/test_env.py", WARN_ONLY),
    ]);
    audit(p.path())
        .args(["--format", "sarif", "-o", "out.sarif"])
        .assert()
        .code(1)
        .stdout(predicate::str::is_empty());
    let v: Value =
        serde_json::from_str(&std::fs::read_to_string(p.path().join("out.sarif")).unwrap())
            .unwrap();
    assert_eq!(v["version"], "2.1.0");
    assert!(v["$schema"].as_str().unwrap().contains("sarif-2.1.0"));
    let run = &v["runs"][0];
    assert_eq!(run["tool"]["driver"]["name"], "racefree");
    let rules = run["tool"]["driver"]["rules"].as_array().unwrap();
    assert_eq!(rules.len(), 6);
    let results = run["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    for r in results {
        let idx = r["ruleIndex"].as_u64().unwrap() as usize;
        assert_eq!(rules[idx]["id"], r["ruleId"]);
        let loc = &r["locations"][0]["physicalLocation"];
        let uri = loc["artifactLocation"]["uri"].as_str().unwrap();
        assert!(uri.starts_with("tests/test_"), "{uri}");
        assert!(loc["region"]["startLine"].as_u64().unwrap() >= 1);
        assert!(r["partialFingerprints"].as_object().unwrap().len() == 1);
    }
    let levels: Vec<&str> = results
        .iter()
        .map(|r| r["level"].as_str().unwrap())
        .collect();
    assert_eq!(levels, vec!["error", "warning"]);
}

#[test]
fn inline_suppression() {
    let src = UNSAFE.replace("as f:", "as f:  # racefree: ignore[RF001]");
    let p = project(&[("test_bad.py", &src)]);
    audit(p.path())
        .assert()
        .code(0)
        .stdout(predicate::str::contains("1 suppressed"));
    let src = UNSAFE.replace("as f:", "as f:  # racefree: ignore[RF004]");
    let p = project(&[("test_bad.py", &src)]);
    audit(p.path()).assert().code(1);
}

#[test]
fn config_disables_rules_adds_roots_and_overrides_severity() {
    let bad = "def test_x():\n    open('/srv/shared/out', 'w')\n    open('/tmp/out', 'w')\n";
    let p = project(&[
        ("test_x.py", bad),
        (
            "pyproject.toml",
            "[tool.racefree.audit]\nshared-roots = [\"/srv/shared\"]\nseverity = { RF001 = \"info\" }\n",
        ),
    ]);
    let out = audit(p.path())
        .args(["--format", "json"])
        .assert()
        .code(0)
        .get_output()
        .stdout
        .clone();
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["summary"]["info"], 2);
    let p = project(&[
        ("test_x.py", bad),
        (
            "pyproject.toml",
            "[tool.racefree.audit]\ndisable = [\"shared-location-write\"]\n",
        ),
    ]);
    audit(p.path())
        .assert()
        .code(0)
        .stdout(predicate::str::contains("No findings"));
    let p = project(&[
        ("test_env.py", WARN_ONLY),
        (
            "pyproject.toml",
            "[tool.racefree.audit]\nfail-on = \"error\"\n",
        ),
    ]);
    audit(p.path()).assert().code(0);
    // The command line wins over the config.
    audit(p.path())
        .args(["--fail-on", "warning"])
        .assert()
        .code(1);
}

#[test]
fn default_paths_follow_config_then_testpaths() {
    let p = project(&[
        ("tests/test_bad.py", UNSAFE),
        ("other/test_bad.py", UNSAFE),
        (
            "pyproject.toml",
            "[tool.pytest.ini_options]\ntestpaths = [\"tests\"]\n",
        ),
    ]);
    let out = audit(p.path())
        .args(["--format", "json"])
        .assert()
        .code(1)
        .get_output()
        .stdout
        .clone();
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["files_audited"], 1);
    assert_eq!(v["findings"][0]["path"], "tests/test_bad.py");

    let p = project(&[
        ("tests/test_bad.py", UNSAFE),
        ("other/test_bad.py", UNSAFE),
        ("setup.cfg", "[tool:pytest]\ntestpaths =\n    other\n"),
    ]);
    let out = audit(p.path())
        .args(["--format", "json"])
        .assert()
        .code(1)
        .get_output()
        .stdout
        .clone();
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["findings"][0]["path"], "other/test_bad.py");
    assert_eq!(v["files_audited"], 1);

    let p = project(&[
        ("tests/test_bad.py", UNSAFE),
        ("other/test_ok.py", SAFE),
        (
            "pyproject.toml",
            "[tool.racefree.audit]\npaths = [\"other\"]\n[tool.pytest.ini_options]\ntestpaths = [\"tests\"]\n",
        ),
    ]);
    audit(p.path()).assert().code(0);
}

#[test]
fn discovery_picks_test_files_and_skips_tool_dirs() {
    let p = project(&[
        ("tests/conftest.py", SAFE),
        ("tests/helpers.py", UNSAFE),
        ("tests/thing_test.py", SAFE),
        (".venv/lib/test_bad.py", UNSAFE),
        ("node_modules/test_bad.py", UNSAFE),
        ("build/test_bad.py", UNSAFE),
    ]);
    audit(p.path())
        .assert()
        .code(0)
        .stdout(predicate::str::contains("No findings in 2 files"));
    // An explicitly named file is audited whatever its name.
    audit(p.path()).arg("tests/helpers.py").assert().code(1);
}

#[test]
fn syntax_errors_are_reported_not_fatal() {
    let p = project(&[
        ("test_broken.py", "def test_x(:\n"),
        ("test_bad.py", UNSAFE),
    ]);
    audit(p.path())
        .assert()
        .code(1)
        .stdout(predicate::str::contains("could not audit test_broken.py:1"))
        .stdout(predicate::str::contains("RF001"));
}

#[test]
fn jobs_do_not_change_results() {
    let p = project(&[
        ("a/test_1.py", UNSAFE),
        ("b/test_2.py", WARN_ONLY),
        ("c/test_3.py", SAFE),
    ]);
    let one = audit(p.path())
        .args(["--format", "json", "-j", "1"])
        .output()
        .unwrap()
        .stdout;
    let two = audit(p.path())
        .args(["--format", "json", "-j", "2"])
        .output()
        .unwrap()
        .stdout;
    assert_eq!(one, two);
    audit(p.path()).args(["-j", "0"]).assert().code(4);
}

/// Runs `racefree audit` under a pseudo-terminal (util-linux `script`), so `--color auto` sees a
/// TTY. Returns None where `script` is not available.
fn audit_on_a_tty(dir: &Path, no_color: Option<&str>) -> Option<String> {
    let script = ["/usr/bin/script", "/bin/script"]
        .into_iter()
        .find(|p| Path::new(p).exists())?;
    let bin = assert_cmd::cargo::cargo_bin("racefree");
    let mut cmd = std::process::Command::new(script);
    cmd.current_dir(dir)
        .args(["-qec", &format!("{} audit", bin.display()), "/dev/null"]);
    cmd.env_remove("NO_COLOR");
    if let Some(v) = no_color {
        cmd.env("NO_COLOR", v);
    }
    let out = cmd.output().ok()?;
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn colour_on_a_terminal_unless_no_color() {
    let p = project(&[("test_bad.py", UNSAFE)]);
    let Some(coloured) = audit_on_a_tty(p.path(), None) else {
        return;
    };
    assert!(coloured.contains("\x1b[1;31merror"), "{coloured:?}");
    let plain = audit_on_a_tty(p.path(), Some("1")).unwrap();
    assert!(
        plain.contains("error[RF001]") && !plain.contains("\x1b["),
        "{plain:?}"
    );
    // An empty NO_COLOR does not disable colour (no-color.org).
    let empty = audit_on_a_tty(p.path(), Some("")).unwrap();
    assert!(empty.contains("\x1b[1;31merror"), "{empty:?}");
}
