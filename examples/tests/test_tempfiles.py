import os
import tempfile


def test_workspace_has_notes(workspace):
    assert (workspace / "notes.txt").read_text() == "hello\n"


def test_tmp_path_is_empty(tmp_path):
    assert list(tmp_path.iterdir()) == []


def test_tempfile_lands_in_private_root():
    # racefree points TMPDIR at a per-worker directory, so fixed names cannot collide.
    path = os.path.join(tempfile.gettempdir(), "demo-fixed-name.txt")
    with open(path, "w") as handle:
        handle.write("mine")
    with open(path) as handle:
        assert handle.read() == "mine"
    os.remove(path)
