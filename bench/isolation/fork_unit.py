"""What namespace isolation adds to a unit forked from the fork server, in the server's own
code (python/racefree_forkserver.py, python/racefree_unitns.py), without pytest's work: from the
fork of the unit to its reaping, for a child that exits at once, ROUNDS times each way,
interleaved:

  plain     fork and exit (what `--isolate tmp` does per unit);
  mounts    fork, unshare mount and IPC namespaces, private tmpfs on /tmp, /dev/shm,
            /var/tmp with the kept paths bound back and a fresh /proc, exit;
  pidns     as the fork server does: a new init from the init factory, the unit forked into
            its PID namespace (PID 2) makes the mounts above and exits, the init sweeps
            (leak scan, kill, exit).

The CPU column is the whole machine's busy time (/proc/stat: user, nice, system, irq,
softirq) per unit, so that it counts every process involved (the server, the unit, the init
factory and its inits, which the kernel reaps without adding their time to anyone's
rusage) and the kernel's own work for them. The ways run in interleaved blocks of BLOCK
rounds, each block's busy time charged to its way; run it on an otherwise idle machine.

Run as root, or inside `racefree __unit-init` (which is how the server runs), with an
interpreter that has pytest, so the forked process has the server's size:

    sudo .venv/bin/python bench/isolation/fork_unit.py [ROUNDS=200]   # RACEFREE=<binary>
    target/release/racefree __unit-init --fork-server -- .venv/bin/python bench/isolation/fork_unit.py 200
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python"))
import racefree_unitns as unitns  # noqa: E402

# As the server does: the factory is started first, before anything else is imported.
# Inside `racefree __unit-init --fork-server` racefree's init names its executable; run as
# root without it, give the binary in RACEFREE (default: the release build).
if "RACEFREE_INIT_FACTORY_EXE_FD" in os.environ:
    unitns.start_factory()
else:
    _here = os.path.dirname(os.path.abspath(__file__))
    unitns.fork_factory(
        None, os.environ.get("RACEFREE", os.path.join(_here, "..", "..", "target", "release", "racefree"))
    )

import statistics  # noqa: E402
import time  # noqa: E402

import racefree_forkserver as forkserver  # noqa: E402  (imports pytest, as the server does)

SPEC = {"private": ["/tmp", "/dev/shm", "/var/tmp"], "keep": [os.getcwd()]}
# As the server does before it forks (racefree_forkserver's ready()): libc, and ctypes with
# it, are loaded once, so no way charges a child for importing ctypes.
unitns._libc()


def once(way):
    """One unit, forked as _serve forks it."""
    start = time.perf_counter()
    init = None
    if way == "pidns":
        init = unitns.new_unit_init()
        init.enter()
    pid = os.fork()
    if pid == 0:
        try:
            unitns.in_unit_process()
            if way != "plain":
                unitns.private_mounts(SPEC)
                if way == "pidns" and os.getpid() != 2:
                    sys.exit("pidns: the unit is not PID 2")
            os._exit(0)
        finally:
            os._exit(70)
    if init is not None:
        init.leave()
    fields = forkserver._exit_fields(pid)
    leaks = init.sweep() if init is not None else []
    os.waitpid(pid, 0)
    if fields.get("code") != 0 or leaks:
        sys.exit("%s: the unit ended with %s, leaks %s" % (way, fields, leaks))
    return time.perf_counter() - start


BLOCK = 25


def busy_seconds():
    """The whole machine's busy time so far: user, nice, system, irq and softirq."""
    with open("/proc/stat") as handle:
        fields = handle.readline().split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq = (int(f) for f in fields[:7])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    ways = ["plain", "mounts", "pidns"]
    walls = {w: [] for w in ways}
    used = {w: 0.0 for w in ways}
    done = 0
    while done < rounds:
        block = min(BLOCK, rounds - done)
        for way in ways:
            before = busy_seconds()
            for _ in range(block):
                walls[way].append(once(way))
            used[way] += busy_seconds() - before
        done += block
    print("%d rounds; %s; %d cores; load %s" % (rounds, os.uname().release, os.cpu_count(),
                                                 " ".join(open("/proc/loadavg").read().split()[:3])))
    for way in ways:
        w = sorted(walls[way])
        print("%-7s wall median %6.2f ms  p90 %6.2f ms   CPU %6.2f ms per unit" % (
            way, statistics.median(w) * 1e3, w[int(len(w) * 0.9)] * 1e3, used[way] / rounds * 1e3))


if __name__ == "__main__":
    main()
