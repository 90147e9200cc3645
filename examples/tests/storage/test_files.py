def test_write_and_read(workspace):
    target = workspace / "data.bin"
    target.write_bytes(b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"


def test_listing(workspace):
    assert sorted(p.name for p in workspace.iterdir()) == ["notes.txt"]


def test_nested_dirs(tmp_path):
    deep = tmp_path / "a" / "b" / "c"
    deep.mkdir(parents=True)
    assert deep.is_dir()
