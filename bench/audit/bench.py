#!/usr/bin/env python3
"""Benchmark `racefree audit` against a named peer on the real suites in bench/.suites.

Both tools get the same explicit list of files (pytest's default test-file patterns under each
suite) and run pinned to one core (taskset -c 0) so the numbers are lines per second *on one
core*. Each is run several times; the median wall time counts, process start-up included.

Peer: CPython's own parser, `ast.parse` over every file in one `python3` process. Any linter
written in Python parses with it first, so this is the floor of every Python-based audit (it
does no analysis at all). Its in-process parse time (start-up excluded) is reported too.

    bash bench/fetch-suites.sh                    # once
    cargo build --release -p racefree
    python3 bench/audit/bench.py                  # all suites, 7 runs each
    python3 bench/audit/bench.py --runs 3 attrs   # some suites
"""

import argparse
import resource
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SUITES_DIR = os.path.join(ROOT, "bench", ".suites")
SUITES = ["attrs", "packaging", "more-itertools", "python-dateutil", "boltons", "toolz"]
SKIP_DIRS = {"__pycache__", "node_modules", "build", "dist", "venv", "site-packages", "sdists"}

PEER = r"""
import ast, sys, time
t = time.perf_counter()
for f in sys.argv[1:]:
    with open(f, "rb") as fh:
        ast.parse(fh.read(), f)
print(time.perf_counter() - t)
"""


def is_test_file(name):
    return name == "conftest.py" or (name.endswith(".py") and (name.startswith("test_") or name.endswith("_test.py")))


def files_of(suite_dir):
    found = []
    for root, dirs, files in os.walk(suite_dir):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in SKIP_DIRS and not d.endswith(".egg-info"))
        found.extend(os.path.join(root, f) for f in sorted(files) if is_test_file(f))
    return found


def count_lines(files):
    total = 0
    for f in files:
        with open(f, "rb") as fh:
            data = fh.read()
        total += data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)
    return total


def pinned(cmd):
    return ["taskset", "-c", "0", *cmd] if shutil.which("taskset") else cmd


def child_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed(cmd, runs):
    """Median wall time and median CPU time (user + system) of `runs` runs, and their outputs."""
    walls, cpus, outputs = [], [], []
    for _ in range(runs):
        c = child_cpu()
        t = time.perf_counter()
        p = subprocess.run(pinned(cmd), capture_output=True, text=True)
        walls.append(time.perf_counter() - t)
        cpus.append(child_cpu() - c)
        if p.returncode not in (0, 1):
            sys.exit(f"{cmd[0]} failed with {p.returncode}: {p.stderr[:2000]}")
        outputs.append(p.stdout)
    return statistics.median(walls), statistics.median(cpus), outputs


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("suites", nargs="*", default=SUITES)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--racefree", default=os.path.join(ROOT, "target", "release", "racefree"))
    ap.add_argument("--python", default=sys.executable)
    args = ap.parse_args()
    if not os.path.exists(args.racefree):
        sys.exit(f"{args.racefree} not found: run `cargo build --release -p racefree` first")
    if not shutil.which("taskset"):
        print("note: taskset not found, runs are not pinned to one core", file=sys.stderr)

    rows = []
    all_files = []
    for suite in args.suites:
        d = os.path.join(SUITES_DIR, suite)
        if not os.path.isdir(d):
            sys.exit(f"{d} missing: run `bash bench/fetch-suites.sh {suite}`")
        files = files_of(d)
        all_files.extend(files)
        rows.append((suite, files))
    rows.append(("all six" if args.suites == SUITES else "all", all_files))

    py_version = subprocess.run([args.python, "--version"], capture_output=True, text=True).stdout.strip()
    print(f"racefree: {args.racefree}; peer: {py_version} ast.parse; {args.runs} runs each, median, pinned to core 0\n")
    print("Wall: median elapsed seconds. CPU: median user+system seconds of the process (robust when other")
    print("work shares the machine). In-process: the peer's own timer around its parse loop (start-up excluded).\n")
    print("| suite | files | lines | racefree wall s | racefree CPU s | racefree lines/s (wall / CPU) | peer wall s | peer CPU s | peer in-process s | peer lines/s (wall / CPU / in-process) | ratio (wall / CPU / in-process) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, files in rows:
        lines = count_lines(files)
        rf_cmd = [args.racefree, "audit", "--format", "json", "--fail-on", "never", "-j", "1", *files]
        rf_wall, rf_cpu, rf_out = timed(rf_cmd, args.runs)
        audited = json.loads(rf_out[0])["lines_audited"]
        if audited != lines:
            sys.exit(f"{name}: racefree audited {audited} lines, expected {lines}")
        peer_wall, peer_cpu, peer_out = timed([args.python, "-c", PEER, *files], args.runs)
        peer_in = statistics.median(float(o.strip()) for o in peer_out)
        print(
            f"| {name} | {len(files)} | {lines} | {rf_wall:.3f} | {rf_cpu:.3f} | {lines / rf_wall:,.0f} / {lines / rf_cpu:,.0f} "
            f"| {peer_wall:.3f} | {peer_cpu:.3f} | {peer_in:.3f} "
            f"| {lines / peer_wall:,.0f} / {lines / peer_cpu:,.0f} / {lines / peer_in:,.0f} "
            f"| {peer_wall / rf_wall:.2f}x / {peer_cpu / rf_cpu:.2f}x / {peer_in / rf_cpu:.2f}x |"
        )


if __name__ == "__main__":
    main()
