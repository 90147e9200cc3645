"""What racefree adds to each test, against plain pytest, in the same run.

A generated file of N trivial parametrized tests (one `assert`, the cheapest test pytest can
run) is run three ways, taking turns ROUNDS times:

  * plain pytest, in one process (the peer: pytest's own per-test work);
  * the same pytest with racefree's plugin (python/racefree_pytest) loaded and writing its
    events to a pipe that a `cat` drains: what the plugin costs inside the test process;
  * `racefree run -n 1`: the plugin, and racefree reading and reporting every event.

Each time is the run loop's alone, from the end of collection to the end of the session:
for pytest from a `-p` plugin's clock, for racefree from its event log (`unit_collected` to
`unit_finished`, which also holds the unit's exit). Medians are reported as microseconds per
test over plain pytest, and as ratios. Last, racefree's own CPU (user and system time of its
process, all threads, read from /proc on Linux): what it takes from the units when every core
runs one.

    bench/.venv/bin/python bench/runner/pertest.py --racefree target/release/racefree [-N 5000]
        [--plugin-dir python] [--plugin-dir OTHER ...]

`--plugin-dir` names directories holding a `racefree_pytest` package to measure in the
second way (default: this checkout's python/), to compare two versions of the plugin in one
run. The third way measures the plugin embedded in the racefree binary given.
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PYTHON = sys.executable
ROUNDS = 7

# A `-p` plugin: the run loop's time, from collection's end to the session's end.
CLOCK = """
import time
_start = [0.0]
def pytest_collection_finish(session):
    _start[0] = time.perf_counter()
def pytest_sessionfinish(session):
    print("RUNLOOP %.6f" % (time.perf_counter() - _start[0]))
"""


def make_suite(root, tests):
    os.makedirs(os.path.join(root, "tests"))
    with open(os.path.join(root, "pyproject.toml"), "w") as handle:
        handle.write('[tool.pytest.ini_options]\ntestpaths = ["tests"]\n')
    with open(os.path.join(root, "tests", "test_many.py"), "w") as handle:
        handle.write(
            "import pytest\n\n\n"
            "@pytest.mark.parametrize('i', range(%d))\n"
            "def test_n(i):\n    assert i >= 0\n" % tests
        )
    clock = os.path.join(root, "clock")
    os.makedirs(clock)
    with open(os.path.join(clock, "runloop_clock.py"), "w") as handle:
        handle.write(CLOCK)
    return clock


def pytest_runloop(cwd, clock, plugin_dir=None):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (clock, plugin_dir) if p)
    cmd = [PYTHON, "-m", "pytest", "-p", "no:cacheprovider", "-p", "runloop_clock", "-qq", "-s"]
    pass_fds = ()
    drain = None
    if plugin_dir:
        read_end, write_end = os.pipe()
        drain = subprocess.Popen(["cat"], stdin=read_end, stdout=subprocess.DEVNULL)
        os.close(read_end)
        env["RACEFREE_EVENT_FD"] = str(write_end)
        cmd += ["-p", "racefree_pytest"]
        pass_fds = (write_end,)
    proc = subprocess.run(cmd, cwd=cwd, env=env, pass_fds=pass_fds, capture_output=True, text=True)
    if plugin_dir:
        os.close(pass_fds[0])
        drain.wait()
    found = re.search(r"RUNLOOP ([0-9.]+)", proc.stdout)
    if proc.returncode != 0 or not found:
        sys.exit("%s exited %d:\n%s" % (" ".join(cmd), proc.returncode, proc.stdout[-3000:]))
    return float(found.group(1))


def own_cpu(pid):
    """CPU seconds (user + system, all threads) process `pid` itself has used, or None where
    /proc is missing (its children's are not counted)."""
    try:
        with open("/proc/%d/stat" % pid) as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def racefree_runloop(cwd, racefree):
    """The run loop's seconds, and racefree's own CPU seconds over the whole run (sampled
    from /proc every 10 ms until it exits: the last few milliseconds are missed)."""
    events = os.path.join(cwd, "events.ndjson")
    cmd = [racefree, "run", "--python", PYTHON, "-q", "--plain", "-n", "1", "--events", events]
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    cpu = None
    while proc.poll() is None:
        cpu = own_cpu(proc.pid) or cpu
        time.sleep(0.01)
    output = proc.stdout.read().decode(errors="replace")
    if proc.returncode != 0:
        sys.exit("%s exited %d:\n%s" % (" ".join(cmd), proc.returncode, output[-3000:]))
    at = {}
    with open(events) as handle:
        for line in handle:
            event = json.loads(line)
            at.setdefault(event["event"], event["t"])
    return at["unit_finished"] - at["unit_collected"], cpu


def main():
    # As in bench.py: with it set, each process would compile the test module from source.
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    parser = argparse.ArgumentParser()
    parser.add_argument("--racefree", required=True)
    parser.add_argument("-N", "--tests", type=int, default=5000)
    parser.add_argument("--plugin-dir", action="append")
    args = parser.parse_args()
    plugin_dirs = [os.path.abspath(d) for d in (args.plugin_dir or [os.path.join(HERE, "..", "..", "python")])]
    racefree = os.path.abspath(args.racefree)
    with tempfile.TemporaryDirectory(prefix="racefree-pertest-") as root:
        clock = make_suite(root, args.tests)
        # Once each first: bytecode caches, racefree's history and fork server preload.
        pytest_runloop(root, clock)
        racefree_runloop(root, racefree)
        times = {"pytest": []}
        for d in plugin_dirs:
            times["pytest + plugin " + d] = []
        times["racefree run -n 1"] = []
        cpus = []
        for _ in range(ROUNDS):
            times["pytest"].append(pytest_runloop(root, clock))
            for d in plugin_dirs:
                times["pytest + plugin " + d].append(pytest_runloop(root, clock, d))
            runloop, cpu = racefree_runloop(root, racefree)
            times["racefree run -n 1"].append(runloop)
            if cpu is not None:
                cpus.append(cpu)
    base = statistics.median(times["pytest"])
    print("%d trivial tests in one file, run loop only, median of %d (seconds):" % (args.tests, ROUNDS))
    for name, values in times.items():
        median = statistics.median(values)
        print(
            "  %-60s %7.3f  %+7.1f us/test  x%.2f"
            % (name, median, (median - base) / args.tests * 1e6, median / base)
        )
    if cpus:
        # What racefree's own process (reading, bookkeeping, reporting) costs per test: CPU
        # that, with a slot per core, the units do not get.
        cpu = statistics.median(cpus)
        print(
            "  racefree's own CPU over the whole run: %.3f s, %.1f us/test (x%.2f of pytest's run loop)"
            % (cpu, cpu / args.tests * 1e6, cpu / base)
        )


if __name__ == "__main__":
    main()
