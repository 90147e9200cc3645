"""Per-unit overhead of `racefree run` with the fork server against spawning an interpreter
per unit, in the same run (issue 8's target: at most 15 ms per unit with fork).

A generated suite of N files with one trivial test each runs three ways, one after another:
  1. plain serial pytest, all files in one process (the work itself, paid once);
  2. `racefree run -n 1 --unit file` (a fork of the warm server per file);
  3. `racefree run -n 1 --unit file --no-fork` (a fresh interpreter per file).
Per-unit overhead = (wall of 2 or 3 - wall of 1) / N. Each racefree variant runs once first
to fill its history (and the fork server's learned preload set), then ROUNDS times; the
median is reported.

    bench/.venv/bin/python bench/runner/overhead.py --racefree target/release/racefree [-N 100]
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

PYTHON = sys.executable
ROUNDS = 2


def make_suite(root, files):
    os.makedirs(os.path.join(root, "tests"))
    with open(os.path.join(root, "pyproject.toml"), "w") as handle:
        handle.write('[tool.pytest.ini_options]\ntestpaths = ["tests"]\n')
    for i in range(files):
        with open(os.path.join(root, "tests", "test_f%03d.py" % i), "w") as handle:
            handle.write("def test_one():\n    assert True\n")


def wall(cmd, cwd):
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    took = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit("%s exited %d:\n%s" % (" ".join(cmd), proc.returncode, proc.stdout[-3000:]))
    return took


def median_wall(cmd, cwd, warm):
    for _ in range(warm):
        wall(cmd, cwd)
    return statistics.median(wall(cmd, cwd) for _ in range(ROUNDS))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--racefree", required=True)
    parser.add_argument("-N", "--files", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="racefree-overhead-") as root:
        make_suite(root, args.files)
        rf = [os.path.abspath(args.racefree), "run", "-n", "1", "--unit", "file", "-q", "--plain", "--python", PYTHON]
        serial = median_wall([PYTHON, "-m", "pytest", "-q", "-p", "no:cacheprovider"], root, 1)
        fork = median_wall(rf, root, 1)
        spawn = median_wall(rf + ["--no-fork"], root, 1)
    n = args.files
    per_fork = (fork - serial) / n * 1000
    per_spawn = (spawn - serial) / n * 1000
    print("%d files x 1 trivial test, -n 1, median of %d runs (wall seconds):" % (n, ROUNDS))
    print("  serial pytest (one process)  %7.2f" % serial)
    print("  racefree, fork per file      %7.2f   overhead %6.1f ms/unit" % (fork, per_fork))
    print("  racefree, spawn per file     %7.2f   overhead %6.1f ms/unit" % (spawn, per_spawn))
    print("  fork overhead / spawn overhead: %.2f" % (per_fork / per_spawn if per_spawn > 0 else float("nan")))


if __name__ == "__main__":
    main()
