import os


def test_worker_name():
    # Under racefree (as under pytest-xdist) each worker is named gw0, gw1, ...
    assert os.environ.get("PYTEST_XDIST_WORKER", "master") in ("master",) or os.environ[
        "PYTEST_XDIST_WORKER"
    ].startswith("gw")


def test_worker_count_is_visible():
    assert int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) >= 1
