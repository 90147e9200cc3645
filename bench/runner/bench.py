"""Times serial pytest, pytest-xdist and racefree (without and with history) on real suites,
checks that racefree's per-test results equal serial pytest's, and prints ratios.

Run through bench/runner/run.sh, which prepares everything. Standard library only.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from collections import defaultdict

HERE = os.path.dirname(os.path.abspath(__file__))
SUITES_DIR = os.path.join(HERE, "..", ".suites")
PYTHON = sys.executable


def junit_results(path):
    out = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        kinds = sorted(c.tag for c in case if c.tag in ("failure", "error", "skipped"))
        out[(case.get("classname", ""), case.get("name", ""))] = "+".join(kinds) or "passed"
    return out


def peak_rss_kib(pid, stop, result):
    """Samples VmHWM (peak RSS) of one process until it exits."""
    path = f"/proc/{pid}/status"
    while not stop.is_set():
        try:
            with open(path) as handle:
                for line in handle:
                    if line.startswith("VmHWM:"):
                        result[0] = max(result[0], int(line.split()[1]))
        except OSError:
            return
        time.sleep(0.05)


def timed(cmd, cwd, measure_rss=False, env=None):
    start = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    rss, stop = [0], threading.Event()
    sampler = None
    if measure_rss and os.path.exists(f"/proc/{proc.pid}"):
        sampler = threading.Thread(target=peak_rss_kib, args=(proc.pid, stop, rss), daemon=True)
        sampler.start()
    output, _ = proc.communicate()
    took = time.monotonic() - start
    stop.set()
    if sampler:
        sampler.join()
    text = output.decode("utf-8", "replace")
    lines = [l for l in text.strip().splitlines() if l.strip()]
    timed.last_output = "\n".join(lines[-40:])
    return took, proc.returncode, (lines[-1:] or [""])[0].strip(), rss[0] / 1024.0


def startups(events_path):
    """Seconds from each unit's start to its collection, from racefree's events."""
    started, found = {}, []
    with open(events_path) as handle:
        for line in handle:
            e = json.loads(line)
            if e["event"] == "unit_started":
                started[e["unit"]] = e["t"]
            elif e["event"] == "unit_collected" and e["unit"] in started:
                found.append(e["t"] - started[e["unit"]])
    return found


def test_times(events_path):
    """Seconds of test time per file (rootdir-relative), from racefree's events: every
    attempt's (a test's failed attempts are ``test_retry`` events), as serial_clock counts."""
    per_file = defaultdict(float)
    with open(events_path) as handle:
        for line in handle:
            e = json.loads(line)
            if e["event"] == "test_finished":
                per_file[e["file"]] += e["duration"]
            elif e["event"] == "test_retry":
                per_file[e["nodeid"].split("::", 1)[0]] += e.get("duration") or 0.0
    return per_file


def bound(per_file, workers, startup):
    """max(test time / W, longest file) + start-up."""
    return max(sum(per_file.values()) / workers, max(per_file.values() or [0.0])) + startup


def lower_bound(per_file, spawn_events_path, workers):
    """max(serial test time / W, longest file) + one interpreter start-up, from racefree's own
    events: test times from the run with history (``per_file``), the start-up from the run
    that spawns an interpreter per unit (a forked unit's start is not an interpreter's
    start-up: the fork server paid that once, and it is part of the run's wall time)."""
    spawned = startups(spawn_events_path)
    startup = min(spawned) if spawned else 0.0
    total = sum(per_file.values())
    longest = max(per_file.values() or [0.0])
    return bound(per_file, workers, startup), total, longest, startup


def serial_bound(junit_path, files, startup, workers):
    """The same bound with serial pytest's own test times (its JUnit XML), not racefree's.
    Each test case goes to the one of racefree's ``files`` it ran from (JUnit's classname
    starts with the file's dotted module path)."""
    modules = {f.removesuffix(".py").replace("/", ".") for f in files}
    per_file = defaultdict(float)
    for case in ET.parse(junit_path).getroot().iter("testcase"):
        # The longest dotted prefix of the classname that is one of racefree's files.
        parts = case.get("classname", "").split(".")
        owner = next(
            (p for p in (".".join(parts[:n]) for n in range(len(parts), 0, -1)) if p in modules),
            case.get("classname", ""),
        )
        per_file[owner] += float(case.get("time") or 0.0)
    return bound(per_file, workers, startup), sum(per_file.values())


def serial_clock_bound(times_path, startup, workers):
    """The bound with the serial run's own test times, as serial_clock measured them (the
    span racefree's plugin times): the issue's "serial test time", taken in the serial run
    and so the same whichever runner is benchmarked."""
    with open(times_path, encoding="utf-8") as handle:
        times = json.load(handle)
    per_file = defaultdict(float)
    for nodeid, secs in times.items():
        per_file[nodeid.split("::", 1)[0]] += secs
    return bound(per_file, workers, startup), sum(per_file.values())


def bench(suite, racefree, workers, scratch):
    src = os.path.join(SUITES_DIR, suite)
    # A suite may be named twice (several samples in one run): each gets its own copy.
    work = tempfile.mkdtemp(prefix=suite + "-", dir=scratch)
    os.rmdir(work)
    shutil.copytree(src, work, ignore=shutil.ignore_patterns("__pycache__", ".racefree", ".pytest_cache"))
    pytest = [PYTHON, "-m", "pytest", "-p", "no:cacheprovider", "-q"]
    rf = [racefree, "run", "--python", PYTHON, "-q", "--plain", "-n", str(workers)]
    row = {"suite": suite}
    # With serial_clock (see there): each test's time in this run, as racefree's plugin times it.
    clock_env = dict(os.environ, RACEFREE_BENCH_SERIAL_TIMES=os.path.join(work, "serial-times.json"))
    plugins = os.path.join(HERE, "plugins")  # serial_clock alone: nothing else to shadow
    clock_env["PYTHONPATH"] = os.pathsep.join(p for p in (plugins, os.environ.get("PYTHONPATH")) if p)
    row["serial"], code_s, line_s, _ = timed(
        pytest + ["-p", "serial_clock", "--junit-xml", "serial.xml"], work, env=clock_env
    )
    row["xdist"], code_x, line_x, _ = timed(pytest + ["-n", str(workers)], work)
    row["rf_cold"], code_c, line_c, rss_c = timed(rf + ["--junit-xml", "rf.xml", "--events", "cold.ndjson"], work, True)
    row["rf_hist"], code_h, line_h, rss_h = timed(rf + ["--junit-xml", "rf2.xml", "--events", "hist.ndjson"], work, True)
    # The same, starting an interpreter per unit instead of forking it (history as above).
    row["rf_spawn"], code_sp, _, _ = timed(rf + ["--no-fork", "--events", "spawn.ndjson"], work)
    if code_sp != code_s:
        print(f"  {suite}: racefree (--no-fork) exited {code_sp}, pytest {code_s}", file=sys.stderr)
    for label, code in (("cold", code_c), ("hist", code_h)):
        if code != code_s:
            print(f"  {suite}: racefree ({label}) exited {code}, pytest {code_s}", file=sys.stderr)
    if code_h != code_s:
        print(timed.last_output, file=sys.stderr)
    row["rss_mb"] = max(rss_c, rss_h)
    row["collect"], _, _, _ = timed(pytest + ["--collect-only"], work)
    row["discover"], _, _, _ = timed([racefree, "run", "--list-files"], work)
    expected = junit_results(os.path.join(work, "serial.xml"))
    row["tests"] = len(expected)
    same = []
    for name in ("rf.xml", "rf2.xml"):
        actual = junit_results(os.path.join(work, name))
        diff = [k for k in set(expected) | set(actual) if expected.get(k) != actual.get(k)]
        same.append(len(diff))
        for k in sorted(diff)[:5]:
            print(f"  {suite} {name}: {k}: pytest {expected.get(k)} racefree {actual.get(k)}", file=sys.stderr)
    row["diffs"] = same
    per_file = test_times(os.path.join(work, "hist.ndjson"))
    row["lb"], row["test_time"], row["longest"], row["startup"] = lower_bound(
        per_file, os.path.join(work, "spawn.ndjson"), workers
    )
    row["lb_serial"], row["serial_test_time"] = serial_bound(
        os.path.join(work, "serial.xml"), per_file, row["startup"], workers
    )
    row["lb_clock"], row["clock_test_time"] = serial_clock_bound(
        os.path.join(work, "serial-times.json"), row["startup"], workers
    )
    # As the bound was computed before (up to session 4): with the forked units' start-up.
    forked = startups(os.path.join(work, "hist.ndjson"))
    row["lb_forked"] = row["lb"] - row["startup"] + (min(forked) if forked else 0.0)
    row["codes"] = (code_s, code_x, code_c, code_h)
    print(f"  {suite}: pytest: {line_s} | xdist: {line_x} | racefree: {line_h}", file=sys.stderr)
    return row


def main():
    # With it set (as on some CI images), every process rewrites and compiles each test module
    # it imports from source; users rarely pay that, so the comparison runs without it.
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    parser = argparse.ArgumentParser()
    parser.add_argument("--racefree", required=True)
    parser.add_argument("-n", "--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("suites", nargs="*")
    args = parser.parse_args()
    suites = args.suites or sorted(
        d for d in os.listdir(SUITES_DIR) if d != "sdists" and os.path.isdir(os.path.join(SUITES_DIR, d))
    )
    rows = []
    with tempfile.TemporaryDirectory(prefix="racefree-bench-") as scratch:
        for suite in suites:
            print(f"benchmarking {suite} with {args.workers} workers ...", file=sys.stderr)
            rows.append(bench(suite, args.racefree, args.workers, scratch))
    w = args.workers
    print(f"\nW = {w}; wall seconds; ratios < 1 favour racefree; same = per-test results equal serial pytest's")
    head = (
        f"{'suite':<16}{'tests':>7}{'serial':>8}{'xdist':>8}{'rf cold':>9}{'rf hist':>9}"
        f"{'spawn':>8}{'hist/xd':>8}{'hist/LB':>8}{'LB':>7}{'/LBf':>6}{'/LBs':>6}{'/LBp':>6}{'disc x':>8}{'RSS MB':>8}  same  exit codes (pytest xdist cold hist)"
    )
    print(head)
    for r in rows:
        print(
            f"{r['suite']:<16}{r['tests']:>7}{r['serial']:>8.2f}{r['xdist']:>8.2f}{r['rf_cold']:>9.2f}"
            f"{r['rf_hist']:>9.2f}{r['rf_spawn']:>8.2f}{r['rf_hist'] / r['xdist']:>8.2f}{r['rf_hist'] / r['lb']:>8.2f}{r['lb']:>7.2f}{r['rf_hist'] / r['lb_forked']:>6.2f}{r['rf_hist'] / r['lb_serial']:>6.2f}{r['rf_hist'] / r['lb_clock']:>6.2f}"
            f"{r['collect'] / r['discover']:>8.1f}{r['rss_mb']:>8.1f}  {'yes' if r['diffs'] == [0, 0] else 'NO ' + str(r['diffs'])}"
            f"  {r['codes']}"
        )
    print("rf cold / rf hist: fork server on (the default), without and with history; spawn: --no-fork, with history;")
    print("LB = max(test time / W, longest file) + one interpreter start-up (the spawn run's shortest),")
    print("from racefree's measurements; /LBf = rf hist over the same bound with a forked unit's start-up;")
    print("/LBs = rf hist over the same bound with serial pytest's test times (its JUnit XML) instead of racefree's;")
    print("/LBp = rf hist over the same bound with the serial run's own per-test times, timed as racefree's plugin times")
    print("a test (from pytest_runtest_logstart to logfinish; bench/runner/plugins/serial_clock.py);")
    print(
        "test time, racefree / serial JUnit / serial per-test: "
        + ", ".join(
            f"{r['suite']} {r['test_time']:.2f} / {r['serial_test_time']:.2f} / {r['clock_test_time']:.2f}" for r in rows
        )
    )
    print("disc x = `pytest --collect-only` time / `racefree run --list-files` time.")
    print_spread(rows)


def print_spread(rows):
    """For a suite sampled more than once (named again on the command line): each ratio's
    median and range, since one sample on a shared machine says little."""
    by_suite = defaultdict(list)
    for r in rows:
        by_suite[r["suite"]].append(r)
    ratios = (("hist/xd", "xdist"), ("hist/LB", "lb"), ("/LBs", "lb_serial"), ("/LBp", "lb_clock"))
    for suite, samples in by_suite.items():
        if len(samples) < 2:
            continue
        parts = []
        for label, key in ratios:
            values = sorted(r["rf_hist"] / r[key] for r in samples)
            parts.append(f"{label} median {statistics.median(values):.2f} ({values[0]:.2f} to {values[-1]:.2f})")
        print(f"{suite}, {len(samples)} samples: " + "; ".join(parts))


if __name__ == "__main__":
    main()
