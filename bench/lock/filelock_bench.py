"""The Python side of bench/lock: the same scenarios as lockbench.rs, with the `filelock`
package's FileLock (flock) and SoftFileLock. Prints one JSON object per measurement.

    python filelock_bench.py uncontended DIR ITERATIONS
    python filelock_bench.py contended DIR KIND PROCESSES SECONDS
    python filelock_bench.py stale DIR KIND REPETITIONS
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import filelock

KINDS = {"FileLock": filelock.FileLock, "SoftFileLock": filelock.SoftFileLock}


def report(name, **fields):
    print(json.dumps({"name": name, **{k: round(v, 3) for k, v in fields.items()}}), flush=True)


def uncontended(directory, iterations):
    for kind, cls in KINDS.items():
        lock = cls(os.path.join(directory, f"py-uncontended-{kind}.lock"))
        n = iterations if kind == "FileLock" else max(iterations // 10, 100)
        for _ in range(n // 10):
            with lock:
                pass
        start = time.perf_counter_ns()
        cpu = time.process_time_ns()
        for _ in range(n):
            with lock:
                pass
        report(
            f"filelock {kind}",
            ns_per_op=(time.perf_counter_ns() - start) / n,
            cpu_ns_per_op=(time.process_time_ns() - cpu) / n,
        )


def contended(directory, kind, processes, seconds):
    path = os.path.join(directory, f"py-contended-{kind}.lock")
    start = time.perf_counter()
    children = [
        subprocess.Popen(
            [sys.executable, __file__, "contended-worker", path, kind, str(seconds)],
            stdout=subprocess.PIPE,
        )
        for _ in range(processes)
    ]
    total = sum(int(c.communicate()[0]) for c in children)
    wall = time.perf_counter() - start
    report(f"filelock {kind} contended x{processes}", ops_per_sec=total / wall, ops=total)


def contended_worker(path, kind, seconds):
    lock = KINDS[kind](path)
    until = time.monotonic() + seconds
    ops = 0
    while time.monotonic() < until:
        with lock:
            pass
        ops += 1
    print(ops)


def stale(directory, kind, repetitions):
    latencies = []
    for i in range(repetitions):
        path = os.path.join(directory, f"py-stale-{kind}-{i}.lock")
        holder = subprocess.Popen(
            [sys.executable, __file__, "hold", path, kind], stdout=subprocess.PIPE, text=True
        )
        assert holder.stdout.readline().strip() == "held"
        acquired = {}

        def wait():
            with KINDS[kind](path, timeout=30):
                acquired["at"] = time.perf_counter()

        waiter = threading.Thread(target=wait)
        waiter.start()
        time.sleep(0.15)
        killed_at = time.perf_counter()
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        waiter.join()
        if "at" in acquired:
            latencies.append((acquired["at"] - killed_at) * 1e3)
    if not latencies:
        report(f"filelock {kind} stale recovery", median_ms=float("inf"))
        return
    latencies.sort()
    pick = lambda q: latencies[round((len(latencies) - 1) * q)]
    report(
        f"filelock {kind} stale recovery",
        median_ms=pick(0.5),
        p95_ms=pick(0.95),
        max_ms=pick(1.0),
        recovered=len(latencies),
        repetitions=repetitions,
    )


def hold(path, kind):
    lock = KINDS[kind](path)
    lock.acquire()
    print("held", flush=True)
    time.sleep(3600)


if __name__ == "__main__":
    scenario, args = sys.argv[1], sys.argv[2:]
    if scenario == "uncontended":
        uncontended(args[0], int(args[1]))
    elif scenario == "contended":
        contended(args[0], args[1], int(args[2]), float(args[3]))
    elif scenario == "contended-worker":
        contended_worker(args[0], args[1], float(args[2]))
    elif scenario == "stale":
        try:
            stale(args[0], args[1], int(args[2]))
        except Exception as e:  # a peer that cannot recover is a result, not a crash
            report(f"filelock {args[1]} stale recovery", median_ms=float("inf"))
            print(f"filelock {args[1]} stale: {e!r}", file=sys.stderr)
    elif scenario == "hold":
        hold(args[0], args[1])
    else:
        sys.exit(f"unknown scenario {scenario!r}")
