#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The fork server (issue 8) end to end: units forked from a warm server per slot get a fresh
//! process per file, the preload set is learned from earlier runs, and a module that is
//! unsafe to preload (it starts a thread) makes racefree spawn instead, with one line naming
//! it, and is left out from then on.

use std::path::Path;
use std::process::Command;

use assert_cmd::cargo::CommandCargoExt;

mod common;
use common::{Ran, copy_dir, fixture_source, python, run};

fn fixture() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixture_source("fork"), dir.path());
    dir
}

/// `racefree run -n 1` (one slot: every file goes through the same server in turn).
fn racefree(dir: &Path, expect_fork: bool, use_threaded: bool, extra: &[&str]) -> Ran {
    run(&mut racefree_command(dir, expect_fork, use_threaded, extra))
}

fn racefree_command(dir: &Path, expect_fork: bool, use_threaded: bool, extra: &[&str]) -> Command {
    racefree_command_on(1, dir, expect_fork, use_threaded, extra)
}

/// `racefree_command` with `workers` slots.
fn racefree_command_on(
    workers: usize,
    dir: &Path,
    expect_fork: bool,
    use_threaded: bool,
    extra: &[&str],
) -> Command {
    let mut cmd = Command::cargo_bin("racefree").unwrap();
    cmd.current_dir(dir)
        .args(["run", "-n", &workers.to_string(), "--plain", "--python"])
        .arg(python())
        .args(extra)
        .env_remove("VIRTUAL_ENV")
        .env("EXPECT_FORK", if expect_fork { "1" } else { "0" })
        .env("USE_THREADED", if use_threaded { "1" } else { "0" });
    cmd
}

fn assert_all_passed(ran: &Ran, what: &str) {
    assert_passed(ran, what, 5);
}

fn assert_passed(ran: &Ran, what: &str, count: usize) {
    assert_eq!(
        ran.code, 0,
        "{what}: exit {}\nstdout:\n{}\nstderr:\n{}",
        ran.code, ran.stdout, ran.stderr
    );
    let want = format!("{count} passed");
    assert!(
        ran.stdout.contains(&want),
        "{what}: expected {want}\n{}",
        ran.stdout
    );
}

#[test]
fn each_file_gets_a_fresh_forked_process_even_for_preloaded_project_modules() {
    let dir = fixture();
    // First run: nothing learned yet; the units teach history that pkg.state is imported.
    let first = racefree(dir.path(), true, false, &[]);
    assert_all_passed(&first, "first run");
    assert!(
        !first.stderr.contains("fork server off"),
        "{}",
        first.stderr
    );
    // Second run: the server preloads pkg.state, and still neither file sees the other's
    // module-level change.
    let second = racefree(dir.path(), true, false, &["-v"]);
    assert_all_passed(&second, "second run (pkg.state preloaded)");
    let ready = second
        .stderr
        .lines()
        .find(|l| l.contains("fork server of slot 0 ready"))
        .unwrap_or_else(|| panic!("no ready line with -v:\n{}", second.stderr));
    assert!(
        !ready.contains("(0 module(s) preloaded)"),
        "the second run preloads what the first imported: {ready}"
    );
    // Without the fork server the same holds with one file per process, and no unit is a
    // fork server's child.
    let spawned = racefree(dir.path(), false, false, &["--no-fork", "--unit", "file"]);
    assert_all_passed(&spawned, "--no-fork --unit file");
}

#[test]
fn a_module_that_starts_a_thread_is_never_preloaded() {
    let dir = fixture();
    // Units import pkg.threaded; history learns it as a module to preload.
    let first = racefree(dir.path(), true, true, &[]);
    assert_all_passed(&first, "first run");
    // Preloading it starts a thread in the server: racefree says so and spawns instead.
    let second = racefree(dir.path(), false, true, &[]);
    assert_all_passed(&second, "second run (falls back)");
    let lines: Vec<&str> = second
        .stderr
        .lines()
        .filter(|l| l.contains("fork server off"))
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "one line, not one per slot:\n{}",
        second.stderr
    );
    assert!(
        lines[0].contains("pkg.threaded") && lines[0].contains("thread"),
        "the line names the module and why: {}",
        lines[0]
    );
    // And what the thread runs, as far as Python knows.
    assert!(lines[0].contains("(time.sleep)"), "{}", lines[0]);
    // History remembers the culprit: the next run forks again without preloading it.
    let third = racefree(dir.path(), true, true, &[]);
    assert_all_passed(&third, "third run (culprit left out)");
    assert!(
        !third.stderr.contains("fork server off"),
        "{}",
        third.stderr
    );
}

#[test]
fn preload_in_config_is_checked_too() {
    let dir = fixture();
    let pyproject = dir.path().join("pyproject.toml");
    let mut text = std::fs::read_to_string(&pyproject).unwrap();
    text.push_str("\n[tool.racefree]\npreload = [\"pkg.threaded\"]\n");
    std::fs::write(&pyproject, text).unwrap();
    let ran = racefree(dir.path(), false, false, &[]);
    assert_all_passed(&ran, "configured unsafe preload");
    assert!(
        ran.stderr.contains("fork server off") && ran.stderr.contains("pkg.threaded"),
        "{}",
        ran.stderr
    );
    // `fork = false` turns the server off without a word.
    let text = std::fs::read_to_string(&pyproject).unwrap().replace(
        "preload = [\"pkg.threaded\"]",
        "fork = false\nunit = \"file\"",
    );
    std::fs::write(&pyproject, text).unwrap();
    let off = racefree(dir.path(), false, false, &[]);
    assert_all_passed(&off, "fork = false");
    assert!(!off.stderr.contains("fork server"), "{}", off.stderr);
}

#[test]
fn a_nested_configuration_file_is_read_only_where_plain_pytest_reads_it() {
    // Plain `pytest` at the top reads one configuration file for the whole session: a
    // pytest.ini below it is not read (checked with pytest itself in run.rs). Units are
    // given the run's file, so the one below their files is not read either, and they
    // still carry on from the server's started session.
    let dir = fixture();
    let own = dir.path().join("tests").join("own");
    std::fs::create_dir_all(&own).unwrap();
    std::fs::write(
        own.join("pytest.ini"),
        "[pytest]\npython_functions = check_*\n",
    )
    .unwrap();
    std::fs::write(
        own.join("test_own.py"),
        "import sys\n\n\n\
         def test_runs_with_the_runs_configuration():\n\
         \x20   server = sys.modules.get(\"racefree_forkserver\")\n\
         \x20   assert server is None or server.UNIT_CONFIG == \"session\"\n\n\n\
         def check_not_a_test_under_the_runs_configuration():\n\
         \x20   raise AssertionError(\"collected with the nested configuration\")\n",
    )
    .unwrap();
    let ran = racefree(dir.path(), true, false, &["--unit", "file"]);
    assert_passed(&ran, "nested pytest.ini, root pyproject.toml", 6);
}

#[test]
fn a_preload_module_this_interpreter_lacks_is_skipped_not_fatal() {
    // History learned with another interpreter (or the module was uninstalled since): the
    // server imports nothing for it, so forking stays safe and stays on.
    let dir = fixture();
    let pyproject = dir.path().join("pyproject.toml");
    let mut text = std::fs::read_to_string(&pyproject).unwrap();
    text.push_str("\n[tool.racefree]\npreload = [\"no_such_module_here\", \"pkg.no_such_part\"]\n");
    std::fs::write(&pyproject, text).unwrap();
    let ran = racefree(dir.path(), true, false, &[]);
    assert_all_passed(&ran, "missing preload modules");
    assert!(!ran.stderr.contains("fork server off"), "{}", ran.stderr);
}

#[test]
fn a_plugins_fixtures_reach_every_forked_unit_through_the_servers_learned_scan() {
    // The server works out once which attributes of each plugin pytest's fixture scan can
    // act on (python/racefree_fixturescan.py); every unit must still see every fixture of a
    // plugin module the server loaded: plain, renamed, autouse, and on a plugin instance.
    let dir = fixture();
    std::fs::write(
        dir.path().join("pkg").join("fixtureplugin.py"),
        "import functools\n\nimport pytest\n\n\n\
         @pytest.fixture\ndef plain_fixture():\n    return \"plain\"\n\n\n\
         @pytest.fixture(name=\"renamed\")\ndef _renamed_fixture():\n    return \"renamed\"\n\n\n\
         @pytest.fixture(autouse=True)\ndef autoused(request):\n    request.node.autoused = True\n\n\n\
         def helper(function):\n    @functools.wraps(function)\n    def wrapper(*args):\n        return function(*args)\n    return wrapper\n\n\n\
         @pytest.fixture\n@helper\ndef decorated_fixture():\n    return \"decorated\"\n\n\n\
         class Plugin:\n    @pytest.fixture\n    def method_fixture(self):\n        return \"method\"\n\n\n\
         def pytest_configure(config):\n    config.pluginmanager.register(Plugin(), \"fixture-plugin-instance\")\n",
    )
    .unwrap();
    let pyproject = dir.path().join("pyproject.toml");
    let mut text = std::fs::read_to_string(&pyproject).unwrap();
    text = text.replace(
        "[tool.pytest.ini_options]\n",
        "[tool.pytest.ini_options]\naddopts = \"-p pkg.fixtureplugin\"\npythonpath = [\".\"]\n",
    );
    std::fs::write(&pyproject, text).unwrap();
    for name in ["one", "two"] {
        std::fs::write(
            dir.path().join("tests").join(format!("test_plugin_{name}.py")),
            "import sys\n\n\n\
             def test_every_plugin_fixture(plain_fixture, renamed, decorated_fixture, method_fixture, request):\n\
             \x20   assert (plain_fixture, renamed, decorated_fixture, method_fixture) == (\"plain\", \"renamed\", \"decorated\", \"method\")\n\
             \x20   assert request.node.autoused\n\
             \x20   if \"racefree_forkserver\" in sys.modules:\n\
             \x20       from _pytest import fixtures\n\n\
             \x20       assert \"dir\" in vars(fixtures), \"the learned scan is not in use\"\n",
        )
        .unwrap();
    }
    let ran = racefree(dir.path(), true, false, &["--unit", "file"]);
    assert_passed(&ran, "plugin fixtures", 7);
    assert!(!ran.stderr.contains("fork server off"), "{}", ran.stderr);
}

#[test]
fn installed_plugins_are_imported_in_the_units_working_directory() {
    // The server imports every installed pytest plugin before it serves a unit, and a module
    // may keep the directory it was imported in: hypothesis keeps its example database and
    // Unicode tables under `Path.cwd() / ".hypothesis"`. A forked unit must see what a
    // spawned one sees, or it loses the project's saved examples.
    let dir = fixture();
    let site = dir.path().join("site");
    install_plugin(&site, "cwdplug", "import os\n\nIMPORTED_IN = os.getcwd()\n");
    std::fs::write(
        dir.path().join("tests").join("test_import_cwd.py"),
        "import os\n\nimport cwdplug\n\n\n\
         def test_the_installed_plugin_was_imported_here():\n\
         \x20   assert cwdplug.IMPORTED_IN == os.getcwd()\n",
    )
    .unwrap();
    let ran = run_file_units_with(dir.path(), &site);
    assert_passed(&ran, "plugin imported in the units' directory", 6);
    assert!(!ran.stderr.contains("fork server off"), "{}", ran.stderr);
}

/// The `-v` line in which slot 0's server says where its units fork.
/// Installs `name` as a pytest plugin (a `pytest11` entry point) in `site`, a directory the
/// test puts on `PYTHONPATH`, with `source` as its module.
fn install_plugin(site: &Path, name: &str, source: &str) {
    let info = site.join(format!("{name}-1.0.dist-info"));
    std::fs::create_dir_all(&info).unwrap();
    std::fs::write(
        info.join("METADATA"),
        format!("Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n"),
    )
    .unwrap();
    std::fs::write(
        info.join("entry_points.txt"),
        format!("[pytest11]\n{name} = {name}\n"),
    )
    .unwrap();
    std::fs::write(site.join(format!("{name}.py")), source).unwrap();
}

/// Writes `tests/test_<stem>_<name>.py` for each of `names`, with `source(name)` in it;
/// returns their paths relative to `dir`.
fn write_test_files(
    dir: &Path,
    stem: &str,
    names: &[&str],
    source: impl Fn(&str) -> String,
) -> Vec<String> {
    names
        .iter()
        .map(|name| {
            let rel = format!("tests/test_{stem}_{name}.py");
            std::fs::write(dir.join(&rel), source(name)).unwrap();
            rel
        })
        .collect()
}

fn ready_line(ran: &Ran) -> String {
    ran.stderr
        .lines()
        .find(|l| l.contains("fork server of slot 0 ready"))
        .unwrap_or_else(|| panic!("no ready line with -v:\n{}", ran.stderr))
        .to_string()
}

#[test]
fn units_fork_once_the_session_has_started_and_each_gets_its_own_basetemp_and_output() {
    // Units fork after pytest_configure and pytest_sessionstart ran in the server; each must
    // still get its own --basetemp, its own captured output and its own stderr.
    let dir = fixture();
    let tests = dir.path().join("tests");
    for name in ["one", "two", "three"] {
        std::fs::write(
            tests.join(format!("test_session_{name}.py")),
            format!(
                "import os\nimport sys\n\n\n\
                 def test_records_its_basetemp(tmp_path_factory, tmp_path):\n\
                 \x20   base = str(tmp_path_factory.getbasetemp())\n\
                 \x20   assert str(tmp_path).startswith(base)\n\
                 \x20   assert tmp_path.name in os.listdir(base)\n\
                 \x20   assert all(n.startswith(\"test_records\") for n in os.listdir(base))\n\
                 \x20   with open(os.path.join(os.environ[\"RECORD_DIR\"], \"{name}\"), \"w\") as f:\n\
                 \x20       f.write(base)\n\n\n\
                 def test_output_is_its_own():\n\
                 \x20   print(\"stdout of {name}\")\n\
                 \x20   sys.stderr.write(\"stderr of {name}\\n\")\n\
                 \x20   assert False, \"fails on purpose in {name}\"\n"
            ),
        )
        .unwrap();
    }
    // In the project (bound into a namespaced unit); /tmp would be the unit's own.
    let record = dir.path().join("records");
    std::fs::create_dir_all(&record).unwrap();
    let ran = run(racefree_command(
        dir.path(),
        true,
        false,
        &[
            "-v",
            "--unit",
            "file",
            "tests/test_session_one.py",
            "tests/test_session_two.py",
            "tests/test_session_three.py",
        ],
    )
    .env("RECORD_DIR", &record));
    assert_eq!(ran.code, 1, "{}\n{}", ran.stdout, ran.stderr);
    assert!(ran.stdout.contains("3 failed, 3 passed"), "{}", ran.stdout);
    assert!(
        ready_line(&ran).contains("units fork at the session point"),
        "{}",
        ran.stderr
    );
    let mut bases: Vec<String> = ["one", "two", "three"]
        .iter()
        .map(|n| std::fs::read_to_string(record.join(n)).unwrap())
        .collect();
    bases.sort();
    bases.dedup();
    assert_eq!(bases.len(), 3, "one basetemp per unit: {bases:?}");
    for name in ["one", "two", "three"] {
        // Each failure shows its own captured output, and nobody else's.
        let section = ran
            .stdout
            .split("_ test_output_is_its_own _")
            .find(|s| s.contains(&format!("fails on purpose in {name}")))
            .unwrap_or_else(|| panic!("no failure section for {name}:\n{}", ran.stdout));
        let section = section.split("short test summary").next().unwrap();
        assert!(section.contains(&format!("stdout of {name}")), "{section}");
        assert!(section.contains(&format!("stderr of {name}")), "{section}");
        for other in ["one", "two", "three"].iter().filter(|o| **o != name) {
            assert!(
                !section.contains(&format!("stdout of {other}")),
                "{section}"
            );
        }
    }
}

#[test]
fn a_plugin_with_session_hooks_makes_units_fork_before_conftest_files_load() {
    // A conftest that sets something up in pytest_sessionstart and takes it down in
    // pytest_sessionfinish expects both once per pytest process. Forked after the session
    // started, every unit would run the tear-down of a set-up made once in the server, and
    // the second unit would find it gone. racefree forks such units before conftest files
    // load (the conftest point), and says why with -v.
    let dir = fixture();
    std::fs::write(
        dir.path().join("tests").join("conftest.py"),
        "import os\n\n\
         MARKER = os.path.join(os.path.dirname(__file__), \"session-marker\")\n\n\n\
         def pytest_sessionstart(session):\n\
         \x20   open(MARKER, \"w\").close()\n\n\n\
         def pytest_sessionfinish(session, exitstatus):\n\
         \x20   os.remove(MARKER)\n",
    )
    .unwrap();
    for name in ["one", "two", "three"] {
        std::fs::write(
            dir.path()
                .join("tests")
                .join(format!("test_marker_{name}.py")),
            "import os\n\nimport conftest\n\n\n\
             def test_the_session_set_up_is_there():\n\
             \x20   assert os.path.exists(conftest.MARKER)\n",
        )
        .unwrap();
    }
    let ran = run(
        racefree_command(dir.path(), true, false, &["-v", "--unit", "file"])
            .env("EXPECT_FORK_POINT", "adopted"),
    );
    assert_passed(&ran, "session hooks in a conftest", 8);
    let ready = ready_line(&ran);
    assert!(
        ready.contains("units fork at the conftest point") && ready.contains("pytest_sessionstart"),
        "the line says where and why: {ready}"
    );
}

#[test]
fn the_servers_first_conftest_files_are_those_of_the_paths_the_run_was_given() {
    // `pytest tests/sub` loads tests/sub/conftest.py before the session starts, and pytest
    // allows `pytest_plugins` only in such a conftest. The fork server must load the same
    // ones for `racefree run tests/sub`, at either fork point.
    let dir = fixture();
    std::fs::write(
        dir.path().join("pkg").join("subplugin.py"),
        "import pytest\n\n\n@pytest.fixture\ndef from_sub_plugin():\n    return \"sub\"\n",
    )
    .unwrap();
    let sub = dir.path().join("tests").join("sub");
    std::fs::create_dir_all(&sub).unwrap();
    std::fs::write(
        sub.join("conftest.py"),
        "pytest_plugins = [\"pkg.subplugin\"]\n",
    )
    .unwrap();
    std::fs::write(
        sub.join("test_sub.py"),
        "import sys\n\n\n\
         def test_uses_the_plugin(from_sub_plugin):\n\
         \x20   assert from_sub_plugin == \"sub\"\n\n\n\
         def test_forked_where_expected():\n\
         \x20   import os\n\
         \x20   server = sys.modules[\"racefree_forkserver\"]\n\
         \x20   assert server.UNIT_CONFIG == os.environ[\"EXPECT_FORK_POINT\"]\n",
    )
    .unwrap();
    for (point, expect) in [("session", "session"), ("conftest", "adopted")] {
        let ran = run(
            racefree_command(dir.path(), true, false, &["-v", "tests/sub"])
                .env("RACEFREE_FORK_POINT", point)
                .env("EXPECT_FORK_POINT", expect),
        );
        assert_passed(&ran, point, 2);
        assert!(
            ready_line(&ran).contains(&format!("units fork at the {point} point")),
            "{}",
            ran.stderr
        );
    }
}

#[test]
fn units_forked_ahead_hold_no_descriptor_of_another_unit() {
    // The server forks each unit's process while the previous unit runs. That process must
    // not keep the previous unit's pipes (racefree would wait for their end) nor its init's
    // socket: every unit holds the same kinds of descriptors, and no pipe of another's.
    let dir = fixture();
    let names = ["a", "b", "c", "d"];
    let files = write_test_files(dir.path(), "fds", &names, |name| {
        format!(
            "import os\nimport sys\n\n\n\
                 def test_records_its_descriptors():\n\
                 \x20   server = sys.modules[\"racefree_forkserver\"]\n\
                 \x20   fds = []\n\
                 \x20   for fd in sorted(os.listdir(\"/proc/self/fd\"), key=int):\n\
                 \x20       try:\n\
                 \x20           fds.append(fd + \" \" + os.readlink(\"/proc/self/fd/\" + fd))\n\
                 \x20       except OSError:\n\
                 \x20           pass\n\
                 \x20   with open(os.path.join(os.environ[\"RECORD_DIR\"], \"{name}\"), \"w\") as f:\n\
                 \x20       f.write(str(server.FORKED_AHEAD) + \"\\n\" + \"\\n\".join(fds))\n"
        )
    });
    for isolate in ["auto", "tmp"] {
        let record = dir.path().join(format!("records-{isolate}"));
        std::fs::create_dir_all(&record).unwrap();
        let mut args = vec!["--isolate", isolate, "--unit", "file"];
        args.extend(files.iter().map(String::as_str));
        let ran = run(racefree_command(dir.path(), true, false, &args).env("RECORD_DIR", &record));
        assert_passed(&ran, isolate, names.len());
        let records: Vec<(bool, Vec<String>)> = names
            .iter()
            .map(|n| {
                let text = std::fs::read_to_string(record.join(n)).unwrap();
                let mut lines = text.lines();
                let ahead = lines.next() == Some("True");
                (ahead, lines.map(str::to_owned).collect())
            })
            .collect();
        let ahead = records.iter().filter(|(ahead, _)| *ahead).count();
        assert_eq!(
            ahead,
            names.len() - 1,
            "{isolate}: all but the first unit are forked ahead"
        );
        // What each descriptor is, without its number, inode or file name.
        let kinds = |fds: &[String]| -> Vec<String> {
            let mut kinds: Vec<String> = fds
                .iter()
                .map(|l| {
                    let target = l.split_once(' ').unwrap().1;
                    match target.split_once(':') {
                        Some((kind, _)) => kind.to_owned(),
                        None => target
                            .rsplit_once('/')
                            .map_or(target, |(d, _)| d)
                            .to_owned(),
                    }
                })
                .collect();
            kinds.sort();
            kinds
        };
        for (_, fds) in &records[1..] {
            assert_eq!(kinds(fds), kinds(&records[0].1), "{isolate}: {records:?}");
        }
        let pipes = |fds: &[String]| -> std::collections::BTreeSet<String> {
            fds.iter()
                .filter_map(|l| l.split_once(' ').map(|(_, t)| t.to_owned()))
                .filter(|t| t.starts_with("pipe:"))
                .collect()
        };
        // The server's own pipes reach every unit; a unit's pipes reach no other unit.
        let everyones = records
            .iter()
            .map(|(_, fds)| pipes(fds))
            .reduce(|a, b| a.intersection(&b).cloned().collect())
            .unwrap();
        for (i, (_, fds)) in records.iter().enumerate() {
            for (j, (_, other)) in records.iter().enumerate().skip(i + 1) {
                let shared: Vec<_> = pipes(fds)
                    .intersection(&pipes(other))
                    .filter(|p| !everyones.contains(*p))
                    .cloned()
                    .collect();
                assert!(
                    shared.is_empty(),
                    "{isolate}: units {i} and {j} share {shared:?}: {records:?}"
                );
            }
        }
    }
}

/// `racefree run -n 1 --unit file` with `site` on `PYTHONPATH`.
fn run_file_units_with(dir: &Path, site: &Path) -> Ran {
    run(racefree_command(dir, true, false, &["--unit", "file"]).env("PYTHONPATH", site))
}

/// Python source (after `import os`) that appends the importing process's pid to `record`.
fn records_its_pid(record: &Path) -> String {
    format!(
        "with open({:?}, \"a\") as f:\n\x20   f.write(\"%d\\n\" % os.getpid())\n",
        record.display().to_string()
    )
}

#[test]
fn what_a_plugin_imports_late_in_a_session_is_imported_once_per_server_not_per_unit() {
    // Hypothesis's plugin imports hypothesis (some 150 ms) in its terminal summary. Units
    // fork once the session has started, so the server's warm-up session runs such hooks
    // before any unit: a first run, with nothing learned yet, must not pay them per unit.
    let dir = fixture();
    let site = dir.path().join("site");
    install_plugin(
        &site,
        "lateplug",
        "def pytest_terminal_summary(terminalreporter):\n\
         \x20   import lateheavy  # noqa: F401\n",
    );
    let record = dir.path().join("imports");
    std::fs::write(
        site.join("lateheavy.py"),
        format!("import os\n\n{}", records_its_pid(&record)),
    )
    .unwrap();
    let ran = run_file_units_with(dir.path(), &site);
    assert_all_passed(&ran, "a plugin that imports late");
    let imports = std::fs::read_to_string(&record).unwrap();
    assert_eq!(
        imports.lines().count(),
        1,
        "imported by the server only, not by each of 5 units: {imports}"
    );
}

/// A stand-in for Hypothesis's constant scan (`_get_local_constants`): each call looks only
/// at modules it has not seen, and records its pid and how many modules that was.
fn install_fake_hypothesis(site: &Path, record: &Path) {
    let conjecture = site.join("hypothesis").join("internal").join("conjecture");
    std::fs::create_dir_all(&conjecture).unwrap();
    std::fs::write(
        site.join("hypothesis").join("__init__.py"),
        "from hypothesis.internal.conjecture import providers  # noqa: F401\n",
    )
    .unwrap();
    std::fs::write(
        site.join("hypothesis").join("internal").join("__init__.py"),
        "",
    )
    .unwrap();
    std::fs::write(conjecture.join("__init__.py"), "").unwrap();
    std::fs::write(
        conjecture.join("providers.py"),
        format!(
            "import os\nimport sys\n\n_seen_modules = set()\n_sys_modules_len = None\n\n\n\
             def _get_local_constants():\n\
             \x20   global _sys_modules_len\n\
             \x20   new = [m for m in list(sys.modules.values()) if id(m) not in _seen_modules]\n\
             \x20   _seen_modules.update(id(m) for m in new)\n\
             \x20   _sys_modules_len = len(sys.modules)\n\
             \x20   with open({:?}, \"a\") as f:\n\
             \x20       f.write(\"%d %d\\n\" % (os.getpid(), len(new)))\n",
            record.display().to_string()
        ),
    )
    .unwrap();
}

#[test]
fn hypothesis_scans_the_servers_modules_for_constants_once_not_in_every_unit() {
    // Hypothesis's plugin scans every module imported so far for constants in the first
    // collection with a Hypothesis test, then only new ones. When the project uses it,
    // the server scans what it holds, and each unit only what it imported itself.
    let dir = fixture();
    let site = dir.path().join("site");
    let record = dir.path().join("scans");
    install_fake_hypothesis(&site, &record);
    let conftest = dir.path().join("tests").join("conftest.py");
    std::fs::write(
        &conftest,
        "import hypothesis\n\n\n\
         def pytest_collection_modifyitems(items):\n\
         \x20   hypothesis.providers._get_local_constants()\n",
    )
    .unwrap();
    let ran = run_file_units_with(dir.path(), &site);
    assert_all_passed(&ran, "a project using Hypothesis");
    let scans = std::fs::read_to_string(&record).unwrap();
    let counts: Vec<usize> = scans
        .lines()
        .map(|line| line.split(' ').nth(1).unwrap().parse().unwrap())
        .collect();
    // The server's scan (pytest and its plugins: hundreds of modules), then one per unit.
    assert_eq!(counts.len(), 5, "{scans}");
    assert!(counts[0] > 100, "the server scanned what it holds: {scans}");
    assert!(
        counts[1..].iter().all(|&n| n < 20),
        "each unit scanned only the modules it imported: {scans}"
    );

    // A project whose own modules do not use Hypothesis: no scan ahead of the units, though
    // the server holds Hypothesis (preloaded: units import it only from the server).
    std::fs::remove_file(&record).unwrap();
    let pyproject = dir.path().join("pyproject.toml");
    let mut config = std::fs::read_to_string(&pyproject).unwrap();
    config.push_str("\n[tool.racefree]\npreload = [\"hypothesis\"]\n");
    std::fs::write(&pyproject, config).unwrap();
    let imported = dir.path().join("imported");
    std::fs::write(
        site.join("hypothesis").join("__init__.py"),
        format!(
            "import os\n\nfrom hypothesis.internal.conjecture import providers  # noqa: F401\n\n{}",
            records_its_pid(&imported)
        ),
    )
    .unwrap();
    std::fs::write(
        &conftest,
        "def pytest_collection_modifyitems(items):\n\
         \x20   import hypothesis\n\n\
         \x20   hypothesis.providers._get_local_constants()\n",
    )
    .unwrap();
    let ran = run_file_units_with(dir.path(), &site);
    assert_all_passed(&ran, "a project not using Hypothesis at its top");
    let imports = std::fs::read_to_string(&imported).unwrap();
    assert_eq!(
        imports.lines().count(),
        1,
        "imported by the server: {imports}"
    );
    let scans = std::fs::read_to_string(&record).unwrap();
    assert_eq!(scans.lines().count(), 4, "one scan per unit: {scans}");
}

#[test]
fn only_the_units_own_process_reports_its_exit_early() {
    // A unit's process tells the server its exit status just before it exits; a process a
    // test forked shares that code and the socket, and ending the same way must not speak
    // for the unit.
    let dir = fixture();
    std::fs::write(
        dir.path().join("tests").join("test_forks.py"),
        "import os\nimport sys\nimport time\n\n\n\
         def test_forks_a_child_that_ends_like_a_unit():\n\
         \x20   if os.fork() == 0:\n\
         \x20       sys.modules[\"racefree_forkserver\"]._exit(3)\n\
         \x20   time.sleep(0.5)\n",
    )
    .unwrap();
    let ran = run(&mut racefree_command(
        dir.path(),
        true,
        false,
        &["tests/test_forks.py"],
    ));
    assert_passed(&ran, "a test that forks", 1);
    assert!(
        !ran.stdout.contains("exit"),
        "{}\n{}",
        ran.stdout,
        ran.stderr
    );
}

#[test]
fn a_unit_inherits_no_socket_object_of_the_server() {
    // The server forks each unit's process while the previous unit runs, holding sockets of
    // its own (the running unit's, its init's). A unit that inherited one as a Python object
    // would find it unclosed when the collector frees it: with warnings as errors (as many
    // projects configure pytest), a ResourceWarning fails whatever test is running then.
    let dir = fixture();
    let names = ["a", "b", "c", "d"];
    let files = write_test_files(dir.path(), "collects", &names, |_| {
        "import gc\n\n\ndef test_collects_garbage():\n    gc.collect()\n".to_owned()
    });
    for isolate in ["auto", "tmp"] {
        let mut args = vec!["--isolate", isolate, "--unit", "file"];
        args.extend(files.iter().map(String::as_str));
        args.extend(["--", "-W", "error"]);
        let ran = run(&mut racefree_command(dir.path(), true, false, &args));
        assert_passed(&ran, isolate, names.len());
    }
}

#[cfg(target_os = "linux")]
#[test]
fn units_forked_ahead_copy_the_pages_earlier_units_copied() {
    // The first units of a server list the pages they copied from it; each process forked
    // ahead afterwards copies those pages before its request comes (racefree_hotpages). At
    // its test, a unit forked after the learning holds every learned page as its own copy,
    // even those it would only have copied later (its exit path) or never. Each test takes
    // a while, so that the process forked meanwhile finishes copying before its request
    // comes (it stops copying when its request comes).
    let probe = Command::new(python())
        .args([
            "-c",
            "import ctypes, mmap\n\
             page = mmap.mmap(-1, 4096)\n\
             view = ctypes.c_char.from_buffer(page)\n\
             libc = ctypes.CDLL(None)\n\
             libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)\n\
             raise SystemExit(libc.madvise(ctypes.addressof(view), 4096, 23) != 0)\n",
        ])
        .status()
        .unwrap();
    if !probe.success() {
        eprintln!("skipped: this kernel has no MADV_POPULATE_WRITE (Linux 5.14)");
        return;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cores < 2 {
        eprintln!(
            "skipped: one core, where -n 1 keeps every core busy and nothing is copied ahead"
        );
        return;
    }
    let dir = fixture();
    let names = ["a", "b", "c", "d", "e", "f", "g", "h"];
    let files = write_test_files(dir.path(), "pages", &names, |name| {
        format!(
            "import os\nimport sys\nimport time\n\n\n\
             def test_records_its_copied_pages():\n\
             \x20   time.sleep(0.3)\n\
             \x20   runs = sys.modules[\"racefree_hotpages\"].learned_runs()\n\
             \x20   page = os.sysconf(\"SC_PAGE_SIZE\")\n\
             \x20   learned = held = 0\n\
             \x20   fd = os.open(\"/proc/self/pagemap\", os.O_RDONLY)\n\
             \x20   for address, count in runs:\n\
             \x20       data = os.pread(fd, count * 8, address // page * 8)\n\
             \x20       for entry in memoryview(data).cast(\"Q\"):\n\
             \x20           learned += 1\n\
             \x20           held += (entry >> 63) & (entry >> 56) & 1\n\
             \x20   os.close(fd)\n\
             \x20   with open(os.path.join(os.environ[\"RECORD_DIR\"], \"{name}\"), \"w\") as f:\n\
             \x20       f.write(\"%d %d\" % (learned, held))\n"
        )
    });
    let record = dir.path().join("records");
    std::fs::create_dir_all(&record).unwrap();
    let pages_held = |workers: usize| -> Vec<(usize, usize)> {
        let mut args = vec!["--isolate", "tmp", "--unit", "file"];
        args.extend(files.iter().map(String::as_str));
        let ran =
            run(racefree_command_on(workers, dir.path(), true, false, &args)
                .env("RECORD_DIR", &record));
        assert_passed(&ran, "copied pages", names.len());
        names
            .iter()
            .map(|n| {
                let text = std::fs::read_to_string(record.join(n)).unwrap();
                let (learned, held) = text.split_once(' ').unwrap();
                (learned.parse().unwrap(), held.parse().unwrap())
            })
            .collect()
    };
    // A slot per core: the copying would take a core another slot's unit needs, so none is
    // done (and no unit learns).
    let busy = pages_held(cores);
    assert!(
        busy.iter().all(|(learned, _)| *learned == 0),
        "with every core a slot's, nothing is copied ahead: {busy:?}"
    );
    let counts = pages_held(1);
    // Units run in history's order, not by name: look at them as a set.
    let with_pages: Vec<&(usize, usize)> = counts.iter().filter(|(l, _)| *l > 0).collect();
    assert!(
        with_pages.len() >= names.len() - 3,
        "units forked after the first ones learned should copy pages ahead: {counts:?}"
    );
    assert!(
        counts.iter().any(|(l, _)| *l == 0),
        "the first unit has nothing learned yet: {counts:?}"
    );
    for (learned, held) in with_pages {
        assert!(
            *learned > 100 && *held * 100 >= *learned * 98,
            "a unit forked ahead holds (nearly) every learned page: {held} of {learned} \
             ({counts:?})"
        );
    }
}

#[test]
fn each_forked_unit_draws_its_own_random_numbers_and_has_a_fresh_interpreters_signals() {
    // Children of one server share its memory, `random`'s state included: without a reseed
    // every file would draw the same "random" numbers (the server reseeds each child, and
    // CPython's `random` also does after any fork; this checks the promise, whoever keeps
    // it). And a test must find the signal dispositions a fresh interpreter has, whatever
    // the server set for itself (a spare waiting for its unit ignores SIGINT).
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("pytest.ini"), "[pytest]\n").unwrap();
    let record = d.join("drawn");
    for i in 0..3 {
        std::fs::write(
            d.join(format!("test_draw{i}.py")),
            format!(
                "import random, signal, sys\n\n\
                 def test_draw():\n\
                 \x20   assert 'racefree_forkserver' in sys.modules\n\
                 \x20   assert signal.getsignal(signal.SIGINT) is signal.default_int_handler\n\
                 \x20   assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL\n\
                 \x20   assert signal.getsignal(signal.SIGCHLD) == signal.SIG_DFL\n\
                 \x20   assert signal.getsignal(signal.SIGPIPE) == signal.SIG_IGN\n\
                 \x20   with open({:?}, 'a') as f:\n\
                 \x20       f.write('%r\\n' % random.random())\n",
                record.display().to_string()
            ),
        )
        .unwrap();
    }
    let mut cmd = Command::cargo_bin("racefree").unwrap();
    cmd.current_dir(d)
        .args(["run", "-n", "1", "--plain", "--unit", "file", "--python"])
        .arg(python())
        .env_remove("VIRTUAL_ENV");
    let ran = run(&mut cmd);
    assert_passed(&ran, "three forked files", 3);
    let drawn: std::collections::BTreeSet<String> = std::fs::read_to_string(&record)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(drawn.len(), 3, "each unit drew its own number: {drawn:?}");
}
