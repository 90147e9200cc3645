use super::{assert_clean, assert_flags};
use crate::RuleId::FixedTempName as R;

#[test]
fn flags_gettempdir_joined_with_fixed_name() {
    assert_flags(
        R,
        r#"
        import os, tempfile
        def test_log():
            path = os.path.join(tempfile.gettempdir(), "mytool.log")
            with open(path, "a") as f:  # <-
                f.write("x")
    "#,
    );
}

#[test]
fn flags_pathlib_tempdir_fixed_dir() {
    assert_flags(
        R,
        r#"
        import tempfile
        from pathlib import Path
        def test_dir():
            Path(tempfile.gettempdir(), "build-cache").mkdir(exist_ok=True)  # <-
    "#,
    );
}

#[test]
fn flags_tmpdir_env_var_with_fixed_name() {
    assert_flags(
        R,
        r#"
        import os
        def test_env():
            base = os.environ.get("TMPDIR", "/tmp")
            os.makedirs(f"{base}/fixture-data")  # <-
    "#,
    );
}

#[test]
fn flags_gettempdir_as_cwd() {
    assert_flags(
        R,
        r#"
        import subprocess
        from tempfile import gettempdir
        def test_run():
            subprocess.check_call(["make"], cwd=gettempdir())  # <-
    "#,
    );
}

#[test]
fn random_temp_names_are_fine() {
    assert_clean(
        R,
        r#"
        import os, tempfile
        def test_tmp():
            fd, path = tempfile.mkstemp(suffix=".log")
            with tempfile.TemporaryDirectory() as d:
                with open(os.path.join(d, "mytool.log"), "w") as f:
                    f.write("x")
            tempfile.mkdtemp(dir=tempfile.gettempdir())
    "#,
    );
}

#[test]
fn reading_from_tempdir_is_fine() {
    assert_clean(
        R,
        r#"
        import os, tempfile
        def test_read():
            path = os.path.join(tempfile.gettempdir(), "mytool.log")
            if os.path.exists(path):
                open(path).read()
            os.listdir(tempfile.gettempdir())
    "#,
    );
}

#[test]
fn tempdir_with_unique_part_is_fine() {
    assert_clean(
        R,
        r#"
        import os, tempfile
        def test_unique(worker_id):
            path = os.path.join(tempfile.gettempdir(), f"mytool-{os.getpid()}.log")
            open(path, "w").close()
            os.makedirs(os.path.join(tempfile.gettempdir(), "cache-" + worker_id))
    "#,
    );
}
