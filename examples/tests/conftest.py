import pytest


@pytest.fixture
def inventory():
    return {"apples": 3, "pears": 0, "plums": 12}


@pytest.fixture
def workspace(tmp_path):
    """A scratch directory with one file in it; private to the test (and to its worker)."""
    (tmp_path / "notes.txt").write_text("hello\n")
    return tmp_path
