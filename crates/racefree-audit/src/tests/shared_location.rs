use super::{assert_clean, assert_flags};
use crate::RuleId::SharedLocation as R;

#[test]
fn flags_open_for_writing_under_tmp() {
    assert_flags(
        R,
        r#"
        def test_report():
            with open("/tmp/report.txt", "w") as f:  # <-
                f.write("x")
    "#,
    );
}

#[test]
fn flags_variable_holding_a_tmp_path_then_written() {
    assert_flags(
        R,
        r#"
        import os
        def test_cache():
            cache = os.path.join("/var/tmp", "mycache")
            os.makedirs(cache, exist_ok=True)  # <-
    "#,
    );
}

#[test]
fn flags_pathlib_under_dev_shm_and_module_constant() {
    assert_flags(
        R,
        r#"
        from pathlib import Path
        SHM = Path("/dev/shm") / "session-root"
        def test_shm():
            SHM.mkdir(parents=True)  # <-
    "#,
    );
}

#[test]
fn flags_tmp_as_working_directory() {
    assert_flags(
        R,
        r#"
        import subprocess
        def test_cli():
            subprocess.run(["tool", "init"], cwd="/tmp", check=True)  # <-
    "#,
    );
}

#[test]
fn flags_tmp_root_handed_to_code_under_test() {
    assert_flags(
        R,
        r#"
        import mylib
        def test_export():
            mylib.export(data=[1], output_dir="/tmp/out")  # <-
    "#,
    );
}

#[test]
fn flags_self_attribute_set_in_setup() {
    assert_flags(
        R,
        r#"
        import unittest, shutil
        class T(unittest.TestCase):
            def setUp(self):
                self.work = "/tmp/work-area"
            def test_x(self):
                shutil.rmtree(self.work)  # <-
    "#,
    );
}

#[test]
fn reading_a_fixed_tmp_path_is_fine() {
    assert_clean(
        R,
        r#"
        import os
        def test_read():
            if os.path.exists("/tmp/report.txt"):
                with open("/tmp/report.txt") as f:
                    f.read()
            with open("/tmp/report.txt", "rb") as f:
                f.read()
    "#,
    );
}

#[test]
fn tmp_path_and_random_names_under_tmp_are_fine() {
    assert_clean(
        R,
        r#"
        import os, tempfile, uuid
        def test_write(tmp_path):
            (tmp_path / "report.txt").write_text("x")
            d = tempfile.mkdtemp(dir="/tmp")
            with open(os.path.join(d, "x"), "w") as f:
                f.write("y")
            with open(f"/tmp/report-{uuid.uuid4()}.txt", "w") as f:
                f.write("z")
    "#,
    );
}

#[test]
fn tmp_strings_that_are_not_written_are_fine() {
    assert_clean(
        R,
        r#"
        import os
        def test_paths():
            assert os.path.normpath("/tmp/a/../b") == "/tmp/b"
            assert mylib.split("/tmp/x") == ["/tmp", "x"]
            p = "/tmp/out"
            print(p.replace("out", "in"))
    "#,
    );
}

#[test]
fn tmp_passed_as_a_non_output_keyword_is_fine() {
    assert_clean(
        R,
        r#"
        import subprocess
        def test_cli(tmp_path):
            subprocess.run(["ls", "/tmp"], cwd=tmp_path)
            mylib.configure(path="/tmp/config.ini")
            tempfile.NamedTemporaryFile(dir="/tmp", prefix="x")
    "#,
    );
}

#[test]
fn configured_shared_roots_count() {
    let src = "def test_x():\n    open('/srv/shared/x', 'w')\n";
    let mut settings = crate::Settings::default();
    assert!(
        crate::audit_source("t.py", src, &settings)
            .unwrap()
            .findings
            .is_empty()
    );
    settings.shared_roots.push("/srv/shared".into());
    assert_eq!(
        crate::audit_source("t.py", src, &settings)
            .unwrap()
            .findings
            .len(),
        1
    );
}

#[test]
fn one_finding_per_call_even_with_two_shared_paths() {
    assert_flags(
        R,
        r#"
        import shutil
        def test_move():
            shutil.move("/tmp/a.txt", "/tmp/b.txt")  # <-
    "#,
    );
}

#[test]
fn making_sure_the_shared_root_exists_is_fine() {
    assert_clean(
        R,
        r#"
        import os
        from pathlib import Path
        def test_root():
            os.makedirs("/tmp", exist_ok=True)
            Path("/var/tmp").mkdir(exist_ok=True)
            os.makedirs("/tmp/" + str(os.getpid()))
    "#,
    );
}

#[test]
fn flags_pytest_basetemp_under_tmp() {
    assert_flags(
        R,
        r#"
        def pytest_configure(config):
            config.option.basetemp = "/tmp/pytest-shared"  # <-
    "#,
    );
    assert_clean(
        R,
        r#"
        def pytest_configure(config):
            config.option.basetemp = config.rootpath / ".tmp" / str(os.getpid())
    "#,
    );
}
