"""Per-unit overhead of `racefree run` with the fork server against spawning an interpreter
per unit, in the same run (issue 8's target: at most 15 ms per unit with fork).

Generated suites of N and 2N files with one trivial test each run three ways, one after
another: plain serial pytest (all files in one process: the work itself), `racefree run -n 1
--unit file` (a fork of the warm server per file) and the same with `--no-fork` (a fresh
interpreter per file). What one more unit costs is the slope between the two sizes, with
serial pytest's own slope taken off:
    per unit = ((racefree(2N) - racefree(N)) - (pytest(2N) - pytest(N))) / N
and the fixed cost of a run (racefree's start, the servers' warm-up) is what is left at N.
Serial pytest's slope comes from its own session clock ("in S s"), the fastest of several
runs: its wall clock includes an interpreter start-up whose noise swamps a few ms per file.
Each racefree variant runs once first to fill its history (and the fork server's learned
preload set), then ROUNDS times, the two fork variants taking turns; medians are reported.

PYTHONDONTWRITEBYTECODE is removed from the environment: with it, every process rewrites
and compiles every test module it imports from source, which users rarely pay.

    bench/.venv/bin/python bench/runner/overhead.py --racefree target/release/racefree [-N 50] [-n 1] [--no-spawn]

With `-n 2` (or as many as the machine has cores) every core is busy, as in a real run; the
wall-clock slopes then mean less, but the unit cycles (per slot) still hold.

It also runs the fork variant with `--isolate tmp`: the difference of the two slopes is what
namespace isolation (the default where the kernel allows it) adds per unit, end to end.

Wall-clock slopes are noisy on a shared machine (a hiccup in one run moves them by tens of
ms per unit), so each racefree variant is also measured from its own event log: the median
time from one unit's start to the next on the slot is a whole cycle (fork or spawn, pytest's
session, exit, racefree's bookkeeping), and the median over hundreds of cycles shrugs off
the hiccups. Serial pytest's per-file time is taken off it in the same way as above.
"""

import json

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

PYTHON = sys.executable
ROUNDS = 3
SERIAL_ROUNDS = 7
# -n: with 1 (the default) one unit runs at a time; with as many as cores, all are busy.
WORKERS = [1]


def make_suite(root, files):
    os.makedirs(os.path.join(root, "tests"))
    with open(os.path.join(root, "pyproject.toml"), "w") as handle:
        handle.write('[tool.pytest.ini_options]\ntestpaths = ["tests"]\n')
    for i in range(files):
        with open(os.path.join(root, "tests", "test_f%03d.py" % i), "w") as handle:
            handle.write("def test_one():\n    assert True\n")


def wall(cmd, cwd, env=None):
    start = time.perf_counter()
    proc = subprocess.run(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    took = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit("%s exited %d:\n%s" % (" ".join(cmd), proc.returncode, proc.stdout[-3000:]))
    return took


def session_secs(cmd, cwd):
    """pytest's own session time ("N passed in S s"): without the interpreter's start-up,
    whose noise (+-100 ms here) would swamp a per-file slope of a few ms."""
    proc = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    found = re.findall(r" in ([0-9.]+)s", proc.stdout)
    if proc.returncode != 0 or not found:
        sys.exit("%s exited %d:\n%s" % (" ".join(cmd), proc.returncode, proc.stdout[-3000:]))
    return float(found[-1])


def median_wall(cmd, cwd, warm):
    for _ in range(warm):
        wall(cmd, cwd)
    return statistics.median(wall(cmd, cwd) for _ in range(ROUNDS))


def unit_cycles(events_path):
    """Seconds from each unit's start to the next one's on the same slot, from an event
    log."""
    by_slot = {}
    with open(events_path) as handle:
        for line in handle:
            if '"unit_started"' in line:
                event = json.loads(line)
                by_slot.setdefault(event["slot"], []).append(event["t"])
    cycles = []
    for starts in by_slot.values():
        starts.sort()
        cycles.extend(b - a for a, b in zip(starts, starts[1:]))
    return cycles


def racefree_runs(variants, cwd):
    """Runs the (cmd, cycles, env) variants in turn, ROUNDS times after one warm-up each, so
    that a slow spell of the machine hits them alike; each run's unit cycles go to its
    `cycles`. Returns the variants' median walls."""
    for cmd, _, env in variants:
        wall(cmd, cwd, env)
    walls = [[] for _ in variants]
    for i in range(ROUNDS):
        for k, (cmd, cycles, env) in enumerate(variants):
            path = os.path.join(cwd, "events-%d-%d.ndjson" % (k, i))
            walls[k].append(wall(cmd + ["--events", path], cwd, env))
            cycles.extend(unit_cycles(path))
    return [statistics.median(w) for w in walls]


def measure(racefree, files, spawn_too, cycles):
    """Median walls (serial pytest, racefree fork, racefree fork with --isolate tmp,
    racefree fork at the conftest point, racefree spawn or None) on a suite of `files`; the
    racefree variants' unit cycles are added to cycles["fork"], cycles["fork_tmp"],
    cycles["fork_conftest"] and cycles["spawn"]."""
    with tempfile.TemporaryDirectory(prefix="racefree-overhead-") as root:
        make_suite(root, files)
        rf = [os.path.abspath(racefree), "run", "-n", str(WORKERS[0]), "--unit", "file", "-q", "--plain", "--python", PYTHON]
        # The fastest of several: serial pytest's per-file slope is taken off every figure
        # below, and a median of three still swung it by +-10 ms per file.
        serial_cmd = [PYTHON, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
        wall(serial_cmd, root)
        serial = min(wall(serial_cmd, root) for _ in range(SERIAL_ROUNDS))
        session = min(session_secs(serial_cmd, root) for _ in range(SERIAL_ROUNDS))
        # Units forked where the server used to fork them, before conftest files load.
        conftest_point = dict(os.environ, RACEFREE_FORK_POINT="conftest")
        fork, fork_tmp, fork_conftest = racefree_runs(
            [
                (rf, cycles["fork"], None),
                (rf + ["--isolate", "tmp"], cycles["fork_tmp"], None),
                (rf, cycles["fork_conftest"], conftest_point),
            ],
            root,
        )
        spawn = None
        if spawn_too:
            spawn = racefree_runs([(rf + ["--no-fork"], cycles["spawn"], None)], root)[0]
    return serial, fork, fork_tmp, fork_conftest, spawn, session


def main():
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    parser = argparse.ArgumentParser()
    parser.add_argument("--racefree", required=True)
    parser.add_argument("-N", "--files", type=int, default=50)
    parser.add_argument("--no-spawn", action="store_true", help="skip the (slow) spawned variant")
    parser.add_argument("-n", "--workers", type=int, default=1,
                        help="worker slots (the wall-clock slopes assume 1; the cycles hold for any)")
    args = parser.parse_args()
    WORKERS[0] = args.workers
    n = args.files
    cycles = {"fork": [], "fork_tmp": [], "fork_conftest": [], "spawn": []}
    small = measure(args.racefree, n, not args.no_spawn, cycles)
    large = measure(args.racefree, 2 * n, not args.no_spawn, cycles)
    slope = [(b - a) / n if a is not None else None for a, b in zip(small[:5], large[:5])]
    # What one more file costs serial pytest itself, from its own session clock.
    slope[0] = (large[5] - small[5]) / n
    per_fork = (slope[1] - slope[0]) * 1000
    per_fork_tmp = (slope[2] - slope[0]) * 1000
    print("%d and %d files x 1 trivial test, -n %d, median of %d runs (wall seconds):" % (n, 2 * n, args.workers, ROUNDS))
    print("                               %6d files %6d files" % (n, 2 * n))
    labels = (
        "serial pytest (one process)",
        "racefree, fork per file",
        "  the same, --isolate tmp",
        "  forked at conftest point",
        "racefree, spawn per file",
    )
    for label, a, b in zip(labels, small[:5], large[:5]):
        if a is not None:
            print("  %-28s %12.2f %12.2f" % (label, a, b))
    print("  per unit, beyond pytest's own per-test work:")
    print("    fork   %7.1f ms/unit   (fixed cost of a run: %.2f s)" % (per_fork, small[1] - small[0] - n * per_fork / 1000))
    print("    fork, --isolate tmp %7.1f ms/unit: namespace isolation adds %.1f ms/unit" % (per_fork_tmp, per_fork - per_fork_tmp))
    per_conftest = (slope[3] - slope[0]) * 1000
    print("    fork at the conftest point %7.1f ms/unit" % per_conftest)
    if slope[4] is not None:
        per_spawn = (slope[4] - slope[0]) * 1000
        print("    spawn  %7.1f ms/unit   (fixed cost of a run: %.2f s)" % (per_spawn, small[4] - small[0] - n * per_spawn / 1000))
        print("  fork / spawn per-unit overhead: %.2f" % (per_fork / per_spawn if per_spawn > 0 else float("nan")))
    serial_per_file = slope[0] * 1000
    print("  from the event logs: median unit cycle (start to next start), minus serial pytest's")
    print("  %.1f ms per file:" % serial_per_file)
    medians = {k: statistics.median(v) * 1000 for k, v in cycles.items() if v}
    for key, label in (
        ("fork", "fork"),
        ("fork_tmp", "fork, --isolate tmp"),
        ("fork_conftest", "fork, conftest point"),
        ("spawn", "spawn"),
    ):
        if key in medians:
            print("    %-20s cycle %7.1f ms   overhead %7.1f ms/unit   (%d cycles)"
                  % (label, medians[key], medians[key] - serial_per_file, len(cycles[key])))
    print("    namespace isolation adds %.1f ms per forked unit" % (medians["fork"] - medians["fork_tmp"]))
    if "spawn" in medians:
        print("    fork / spawn overhead: %.2f" % ((medians["fork"] - serial_per_file) / (medians["spawn"] - serial_per_file)))


if __name__ == "__main__":
    main()
