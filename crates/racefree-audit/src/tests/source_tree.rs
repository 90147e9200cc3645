use super::{assert_clean, assert_flags};
use crate::RuleId::SourceTree as R;

#[test]
fn flags_write_next_to_test_file() {
    assert_flags(
        R,
        r#"
        import os
        HERE = os.path.dirname(os.path.abspath(__file__))
        def test_generate():
            with open(os.path.join(HERE, "generated.json"), "w") as f:  # <-
                f.write("{}")
    "#,
    );
}

#[test]
fn flags_pathlib_parent_of_file() {
    assert_flags(
        R,
        r#"
        from pathlib import Path
        def test_snapshot():
            out = Path(__file__).parent / "snapshots" / "last.txt"
            out.write_text("x")  # <-
    "#,
    );
}

#[test]
fn flags_rootdir_write() {
    assert_flags(
        R,
        r#"
        import shutil
        def test_copy(request):
            shutil.copy("a.txt", request.config.rootdir / "a-copy.txt")  # <-
    "#,
    );
}

#[test]
fn reading_data_files_next_to_test_is_fine() {
    assert_clean(
        R,
        r#"
        import os
        from pathlib import Path
        HERE = os.path.dirname(__file__)
        def test_read():
            with open(os.path.join(HERE, "data.json")) as f:
                f.read()
            Path(__file__).parent.joinpath("data.json").read_text()
    "#,
    );
}

#[test]
fn copying_from_source_tree_to_tmp_path_is_fine() {
    assert_clean(
        R,
        r#"
        import shutil, os
        HERE = os.path.dirname(__file__)
        def test_copy(tmp_path):
            shutil.copy(os.path.join(HERE, "data.json"), tmp_path / "data.json")
            shutil.copytree(os.path.join(HERE, "tree"), tmp_path / "tree")
    "#,
    );
}

#[test]
fn running_in_the_source_dir_is_not_a_write() {
    assert_clean(
        R,
        r#"
        import subprocess, os
        def test_run():
            subprocess.run(["python", "-c", "pass"], cwd=os.path.dirname(__file__))
            os.path.exists(os.path.join(os.path.dirname(__file__), "out.txt"))
    "#,
    );
}
