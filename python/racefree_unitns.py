"""A forked unit's namespaces and init, for racefree's fork server (racefree_forkserver).

In namespace mode the server forks each unit into a PID namespace of its own
(``next_child_in_new_pid_namespace`` before the fork, ``next_child_in_own_pid_namespace``
after). The forked child makes its mount and IPC namespaces and private mounts
(``private_mounts``) and becomes the unit's init (``run_under_own_init``), which forks the
process that runs pytest. racefree writes this file beside the server and the plugin.
"""

import json
import os
import signal
import sys

_libc_handle = None


def _libc():
    global _libc_handle
    if _libc_handle is None:
        import ctypes

        _libc_handle = ctypes.CDLL(None, use_errno=True)
    return _libc_handle


def _check(result, what):
    if result != 0:
        import ctypes

        errno = ctypes.get_errno()
        raise OSError(errno, "%s: %s" % (what, os.strerror(errno)))


_CLONE_NEWNS = 0x00020000
_CLONE_NEWIPC = 0x08000000
_CLONE_NEWPID = 0x20000000
_MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 2, 4, 8
_MS_BIND, _MS_REC, _MS_PRIVATE = 4096, 16384, 1 << 18


def private_mounts(spec):
    """Linux namespace isolation: puts this child (PID 1 of its own PID namespace, see
    _serve) in mount and IPC namespaces of its own, gives it fresh tmpfs mounts on the
    private directories (/tmp, /dev/shm, /var/tmp), binds back the kept paths under them
    (racefree's session root, the project, the virtualenv) and mounts a fresh /proc, as
    racefree's init does for a spawned unit. The server runs as root of the slot's user
    namespace, so the child may do this. Any failure is fatal: a unit must not run with less
    isolation than asked for."""
    libc = _libc()
    o_path = getattr(os, "O_PATH", 0o10000000)

    private = [os.path.realpath(d) for d in spec["private"] if os.path.isdir(d)]
    private = sorted(set(private))

    def under(path, root):
        return path == root or path.startswith(root.rstrip("/") + "/")

    kept = sorted(
        set(os.path.realpath(k) for k in spec["keep"] if any(under(os.path.realpath(k), d) for d in private))
    )
    outermost = [k for k in kept if not any(k != o and under(k, o) for o in kept)]
    _check(libc.unshare(_CLONE_NEWNS | _CLONE_NEWIPC), "unshare(CLONE_NEWNS | CLONE_NEWIPC)")
    _check(libc.mount(None, b"/", None, _MS_REC | _MS_PRIVATE, None), "making mounts private")
    handles = [(os.open(k, o_path), k) for k in outermost]
    for d in private:
        _check(
            libc.mount(b"tmpfs", d.encode(), b"tmpfs", _MS_NOSUID | _MS_NODEV, b"mode=1777"),
            "mounting a private tmpfs on " + d,
        )
    for fd, path in handles:
        os.makedirs(path, exist_ok=True)
        source = ("/proc/self/fd/%d" % fd).encode()
        _check(libc.mount(source, path.encode(), None, _MS_BIND | _MS_REC, None), "binding back " + path)
        os.close(fd)
    # Last: binding back goes through the old /proc.
    _check(
        libc.mount(b"proc", b"/proc", b"proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC, None),
        "mounting a fresh /proc",
    )


# The unit's init. In namespace mode the server forks each unit into a PID namespace of its
# own: the forked child (the process racefree watches: its pid came with the hello, it leads
# the unit's process group) is PID 1 there and forks the process that runs pytest, PID 2.
# This mirrors racefree's init for spawned units (crates/racefree-runner/src/isolation/linux):
# the same signals forwarded, the same leak lines; as PID 1 cannot die by the signal that
# killed pytest, it tells the server on a pipe, and the server reports that signal.

# Signals the init passes on to pytest.
_FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)
WAITED = frozenset(_FORWARDED) | {signal.SIGCHLD}
# Longest command line in a leak line: keeps each line one atomic pipe write.
_CMDLINE_MAX = 1024
_PIPE_BUF = 4096
_HOST_PROC_ENV = "RACEFREE_HOST_PROC_FD"
# The host's /proc (an O_PATH descriptor from racefree's init): leaks are named by the pid
# racefree sees. Held by the server and the units' inits; never by pytest.
_host_proc = None
# The server's own PID namespace, to come back to after forking a unit into a new one.
_own_pid_ns = None


def take_host_proc():
    global _host_proc
    value = os.environ.pop(_HOST_PROC_ENV, None)
    if value:
        _host_proc = int(value)
        # Forks keep it; nothing the server or a unit executes ever does.
        os.set_inheritable(_host_proc, False)


def drop_namespace_fds():
    """In the process that runs pytest: tests get no handle on the host's /proc or on the
    slot's PID namespace."""
    global _host_proc, _own_pid_ns
    for fd in (_host_proc, _own_pid_ns):
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass
    _host_proc = _own_pid_ns = None


def next_child_in_new_pid_namespace():
    """Makes the server's next child PID 1 of a new PID namespace (unshare(CLONE_NEWPID)
    changes where children go, never the server itself)."""
    global _own_pid_ns
    if _own_pid_ns is None:
        _own_pid_ns = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    _check(_libc().unshare(_CLONE_NEWPID), "unshare(CLONE_NEWPID)")


def next_child_in_own_pid_namespace():
    """Undoes next_child_in_new_pid_namespace once the child is forked: the kernel lets a
    process unshare a PID namespace again only from its own."""
    _check(_libc().setns(_own_pid_ns, _CLONE_NEWPID), "setns(CLONE_NEWPID) back")


def run_under_own_init(report_w, unblocked):
    """Called in the forked child, PID 1 of its namespace, after private_mounts, with
    WAITED blocked since the fork. Forks the process that goes on to run the unit: only
    that one returns, with `unblocked` as its signal mask. This process becomes the init and
    exits when the unit is over."""
    sys.stdout.flush()
    sys.stderr.flush()
    unit = os.fork()
    if unit == 0:
        os.close(report_w)
        _drop_capabilities()
        signal.pthread_sigmask(signal.SIG_SETMASK, unblocked)
        return
    try:
        code = _init(unit, report_w)
    except BaseException:  # noqa: BLE001 - the init must never return into the server
        import traceback

        traceback.print_exc()
        code = 70
    os._exit(code)


def _kill(pid, sig):
    try:
        os.kill(pid, sig)
    except OSError:
        pass  # it has exited meanwhile


def _drop_capabilities():
    """pytest runs with what its uid has: no capabilities unless it is root. A server not run
    by root holds CAP_SYS_ADMIN in the slot's user namespace (racefree's init makes it
    ambient) only to make each unit's namespaces."""
    if os.geteuid() == 0:
        return
    import ctypes

    libc = _libc()
    pr_cap_ambient, pr_cap_ambient_clear_all = 47, 4
    _check(libc.prctl(pr_cap_ambient, pr_cap_ambient_clear_all, 0, 0, 0), "clearing ambient capabilities")
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
    sets = (ctypes.c_uint32 * 6)()  # effective, permitted, inheritable (two words each): empty
    _check(libc.capset(header, sets), "dropping capabilities")


def _init(unit, report_w):
    """PID 1 of the unit's namespace: reaps every process that ends up its child, forwards
    signals to pytest, and when pytest ends reports each process still alive as a leak on
    the event pipe and kills it. Returns pytest's exit status; if a signal killed pytest,
    says which on `report_w` (for the server to report) and returns 128 + its number."""
    status = None
    while status is None:
        # Blocked, not handled, and taken here: the kernel drops signals a namespace's init
        # neither handles nor blocks, and none is lost between the fork and the wait.
        sig = signal.sigwaitinfo(WAITED).si_signo
        if sig == signal.SIGCHLD:
            status = _reap(unit)
        else:
            _kill(unit, sig)
    leaks = _stop_leftovers()
    _report_leaks(leaks)
    _kill_all()
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        os.write(report_w, bytes([sig]))
        return 128 + sig
    return os.WEXITSTATUS(status) if os.WIFEXITED(status) else 70


def _reap(watched):
    """Reaps every exited child without blocking; returns `watched`'s wait status if it was
    one of them, else None."""
    found = None
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return found
        if pid == 0:
            return found
        if pid == watched:
            found = status


def _stop_leftovers():
    """Freezes everything else in the namespace (SIGSTOP: nothing can fork while we look)
    and lists what is alive as (pid racefree sees, command line, test). Zombies are gone,
    only not yet reaped: not leaks."""
    _reap(None)
    try:
        # From a namespace's init, kill(-1) reaches every process of the namespace but itself.
        os.kill(-1, signal.SIGSTOP)
    except OSError:
        return []  # ESRCH: nobody is left, the common case
    leaks = []
    pids = sorted(int(name) for name in os.listdir("/proc") if name.isdigit() and name != "1")
    for pid in pids:
        if _is_zombie(pid):
            continue
        leaks.append((_host_pid(pid), _cmdline(pid), _test_of(pid)))
    return leaks


def _read_proc(pid, name):
    try:
        with open("/proc/%d/%s" % (pid, name), "rb") as handle:
            return handle.read()
    except OSError:
        return None


def _is_zombie(pid):
    stat = _read_proc(pid, "stat")
    if stat is None:
        return True  # already gone
    # The state follows the parenthesised command name, which may itself contain ") ".
    rest = stat.rpartition(b") ")[2]
    return rest[:1] in (b"", b"Z", b"X")


def _cmdline(pid):
    raw = _read_proc(pid, "cmdline") or b""
    line = " ".join(w.decode("utf-8", "replace") for w in raw.split(b"\0") if w)
    encoded = line.encode("utf-8")
    if len(encoded) > _CMDLINE_MAX:
        line = encoded[:_CMDLINE_MAX].decode("utf-8", "ignore")
    return line


def _test_of(pid):
    """The test that was running when the process (or its ancestor) started: the plugin
    keeps it in RACEFREE_TEST, which every process a test starts inherits."""
    for item in (_read_proc(pid, "environ") or b"").split(b"\0"):
        if item.startswith(b"RACEFREE_TEST="):
            return item[len(b"RACEFREE_TEST="):].decode("utf-8", "replace")[:_CMDLINE_MAX] or None
    return None


def _host_pid(pid):
    """The pid racefree sees for our `pid`: a pidfd's fdinfo lists the pid as seen from the
    PID namespace of the /proc it is read through, and _host_proc is racefree's. Without it
    (the server was not started by racefree's init) the pid as the unit sees it: racefree
    only reports a leak's pid, it never signals it."""
    if _host_proc is None:
        return pid
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return pid
    try:
        fd = os.open("self/fdinfo/%d" % pidfd, os.O_RDONLY | os.O_CLOEXEC, dir_fd=_host_proc)
        with open(fd, "rb") as handle:
            text = handle.read()
    except OSError:
        return pid
    finally:
        os.close(pidfd)
    for line in text.splitlines():
        if line.startswith(b"NSpid:"):
            fields = line.split()
            if len(fields) > 1 and int(fields[1]) > 0:
                return int(fields[1])
    return pid


def _report_leaks(leaks):
    """One line per leak on the event pipe, each one write below PIPE_BUF so that lines
    never interleave: {"e":"leak","pid":N,"cmdline":"...","test":"..."}."""
    try:
        fd = int(os.environ["RACEFREE_EVENT_FD"])
    except (KeyError, ValueError):
        return
    for pid, cmdline, test in leaks:
        message = {"e": "leak", "pid": pid, "cmdline": cmdline}
        if test:
            message["test"] = test
        line = (json.dumps(message, separators=(",", ":")) + "\n").encode("utf-8")
        if len(line) > _PIPE_BUF:  # only a command line full of escaped characters
            message.pop("test", None)
            message["cmdline"] = cmdline[:200]
            line = (json.dumps(message, separators=(",", ":")) + "\n").encode("utf-8")
        try:
            os.write(fd, line)
        except OSError:
            return


def _kill_all():
    """SIGKILLs everything else in the namespace and reaps it all."""
    try:
        os.kill(-1, signal.SIGKILL)
    except OSError:
        pass
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return
        except InterruptedError:
            continue
