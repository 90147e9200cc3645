"""What namespace isolation adds to a unit forked from the fork server, in the server's own
code (python/racefree_forkserver.py, python/racefree_unitns.py), without pytest's work: from the fork of the unit to
its reaping, for a child that exits at once, ROUNDS times each way, interleaved:

  plain     fork and exit (what `--isolate tmp` does per unit);
  mounts    fork, unshare a mount namespace, private tmpfs on /tmp, /dev/shm, /var/tmp with
            the kept paths bound back, exit (namespace mode before units had their own init);
  pidns     as the fork server does now: the unit is PID 1 of a new PID namespace and makes
            mount and IPC namespaces, the mounts and a fresh /proc, then forks pytest's
            process (PID 2) and is its init: leak scan, exit status reported.

Run as root, or inside `racefree __unit-init` (which is how the server runs), with an
interpreter that has pytest, so the forked process has the server's size:

    sudo .venv/bin/python bench/isolation/fork_unit.py [ROUNDS=200]
    target/release/racefree __unit-init -- .venv/bin/python bench/isolation/fork_unit.py 200
"""

import os
import resource
import signal
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python"))
import racefree_forkserver as forkserver  # noqa: E402  (imports pytest, as the server does)
import racefree_unitns as server  # noqa: E402

SPEC = {"private": ["/tmp", "/dev/shm", "/var/tmp"], "keep": [os.getcwd()]}


def unit(way, report_w, unblocked):
    if way == "mounts":
        # The old per-unit namespace: a mount namespace only (a copy of the old code's core).
        libc = server._libc()
        server._check(libc.unshare(server._CLONE_NEWNS), "unshare")
        server._check(libc.mount(None, b"/", None, server._MS_REC | server._MS_PRIVATE, None), "private")
        for d in SPEC["private"]:
            flags = server._MS_NOSUID | server._MS_NODEV
            server._check(libc.mount(b"tmpfs", d.encode(), b"tmpfs", flags, b"mode=1777"), "tmpfs")
    elif way == "pidns":
        server.private_mounts(SPEC)
        server.run_under_own_init(report_w, unblocked)  # returns in pytest's process only
    os._exit(0)


def once(way):
    """One unit, forked as _serve forks it."""
    start = time.perf_counter()
    report_r = report_w = unblocked = None
    if way == "pidns":
        report_r, report_w = os.pipe()
        unblocked = signal.pthread_sigmask(signal.SIG_BLOCK, server.WAITED)
        server.next_child_in_new_pid_namespace()
    pid = os.fork()
    if pid == 0:
        try:
            unit(way, report_w, unblocked)
        finally:
            os._exit(70)
    if way == "pidns":
        server.next_child_in_own_pid_namespace()
        signal.pthread_sigmask(signal.SIG_SETMASK, unblocked)
        os.close(report_w)
    fields = forkserver._exit_fields(pid, report_r)
    os.waitpid(pid, 0)
    if report_r is not None:
        os.close(report_r)
    if fields.get("code") != 0:
        sys.exit("%s: the unit ended with %s" % (way, fields))
    return time.perf_counter() - start


def children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    ways = ["plain", "mounts", "pidns"]
    walls = {w: [] for w in ways}
    cpu = {w: 0.0 for w in ways}
    for _ in range(rounds):
        for way in ways:
            before = children_cpu()
            walls[way].append(once(way))
            cpu[way] += children_cpu() - before
    print("%d rounds; %s; %d cores; load %s" % (rounds, os.uname().release, os.cpu_count(),
                                                 " ".join(open("/proc/loadavg").read().split()[:3])))
    for way in ways:
        w = sorted(walls[way])
        print("%-7s wall median %6.2f ms  p90 %6.2f ms   children's CPU %6.2f ms per unit" % (
            way, statistics.median(w) * 1e3, w[int(len(w) * 0.9)] * 1e3, cpu[way] / rounds * 1e3))


if __name__ == "__main__":
    main()
