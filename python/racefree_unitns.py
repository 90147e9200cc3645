"""A forked unit's namespaces and init, for racefree's fork server (racefree_forkserver).

In namespace mode every unit runs in PID, mount and IPC namespaces of its own, with an init
as PID 1 that, when the unit is over, reports what it left running as leaks and kills it, as
racefree's init does for a spawned unit (crates/racefree-runner/src/isolation/linux).

Who forks what, and why (the costs are page tables: forking the warm server, some 100 MB,
costs 3-4 ms of CPU, forking a bare interpreter 0.5 ms):

  server ──fork──> pytest's process (PID 2 of the unit's namespace)
    │                 makes its own mount and IPC namespaces (``private_mounts``), drops
    │                 its capabilities and runs the unit
    └─ init factory: forked from the server before pytest is imported, so it stays small;
         └──fork──> the unit's init (PID 1 of a new PID namespace), one per unit

For each unit the server asks the factory for a new init (``new_unit_init``), enters the
init's PID namespace for its next child (``UnitInit.enter``), forks pytest's process there
and comes back (``UnitInit.leave``). pytest's process is the server's child, so the server
still sees its exit status directly, and racefree signals it directly; what it leaves
behind is reparented to the init. When it has exited the server asks the init to sweep
(``UnitInit.sweep``): the init stops everything else in the namespace, lists it, kills it,
hands the list back and exits, which ends the namespace.

racefree writes this file beside the server and the plugin.
"""

import json
import os
import signal
import socket
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
_PR_SET_PDEATHSIG = 1


def private_mounts(spec):
    """In pytest's process, PID 2 of the unit's PID namespace: mount and IPC namespaces of
    its own, fresh tmpfs mounts on the private directories (/tmp, /dev/shm, /var/tmp), the
    kept paths under them bound back (racefree's session root, the project, the virtualenv)
    and a fresh /proc, as racefree's init does for a spawned unit. The server runs as root
    of the slot's user namespace, so its child may do this. Any failure is fatal: a unit
    must not run with less isolation than asked for."""
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
    # Last: binding back goes through the old /proc. The new one shows the unit's PID
    # namespace, in which this process lives.
    _check(
        libc.mount(b"proc", b"/proc", b"proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC, None),
        "mounting a fresh /proc",
    )


def drop_capabilities():
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


def _die_with_parent(parent):
    """SIGKILL when the parent (the server) exits, so that the factory never outlives it."""
    _check(_libc().prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0), "prctl(PR_SET_PDEATHSIG)")
    if os.getppid() != parent:
        os._exit(0)  # the parent was gone before the signal was armed


def close_all_but(keep):
    """Closes every descriptor not in ``keep``: those /proc lists (a few dozen), or where
    there is no /proc, every number up to the limit (a bound on ``closerange``: where the
    kernel has no ``close_range`` it is one call per number)."""
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        fds = range(min(os.sysconf("SC_OPEN_MAX"), 1 << 16))
    for fd in fds:
        if fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass  # the descriptor of the listing itself, or not open


# The server's side.

_HOST_PROC_ENV = "RACEFREE_HOST_PROC_FD"
# (pid, socket) of the init factory, once started.
_factory = None
# The server's own PID namespace, to come back to after forking a unit into an init's.
_own_pid_ns = None
# Every unit init the server holds (the running unit's, and the one of the process forked
# ahead for the next unit), each closed once swept or given up.
_live = []


def start_factory():
    """Forks the init factory if this server is in namespace mode: racefree's init started
    it and passed the host's /proc, named in RACEFREE_HOST_PROC_FD. Call it first thing,
    before pytest is imported: every unit's init is a fork of the factory, and a fork costs
    what the forked process has mapped."""
    value = os.environ.pop(_HOST_PROC_ENV, None)
    if value and _factory is None:
        fork_factory(int(value))


def fork_factory(host_proc):
    """Forks the init factory, which takes `host_proc` (None: leaks are named by their pid
    in the unit's namespace)."""
    global _factory
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    server = os.getpid()
    pid = os.fork()
    if pid == 0:
        try:
            ours.close()
            close_all_but({0, 1, 2, theirs.fileno(), host_proc})
            _die_with_parent(server)
            _factory_loop(theirs, host_proc)
        finally:
            os._exit(70)
    theirs.close()
    if host_proc is not None:
        os.close(host_proc)
    ours.set_inheritable(False)
    _factory = (pid, ours)


def factory_pid():
    """The factory's pid: a child the server has on purpose (None without one)."""
    return _factory[0] if _factory else None


class UnitInit:
    """The server's handle on one unit's init: PID 1 of the namespace the next child is
    forked into between ``enter`` and ``leave``."""

    def __init__(self, pid, ctl):
        self.pid = pid
        self.ctl = ctl
        self.ns = None

    def enter(self):
        global _own_pid_ns
        if _own_pid_ns is None:
            _own_pid_ns = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
        self.ns = os.open("/proc/%d/ns/pid" % self.pid, os.O_RDONLY | os.O_CLOEXEC)
        _check(_libc().setns(self.ns, _CLONE_NEWPID), "setns(CLONE_NEWPID) into the unit's")

    def leave(self):
        """Back in the server, after the fork: its next child is born in its own namespace
        again."""
        os.close(self.ns)
        self.ns = None
        _check(_libc().setns(_own_pid_ns, _CLONE_NEWPID), "setns(CLONE_NEWPID) back")

    def sweep(self, exiting=False):
        """After pytest's process has exited: the init stops, lists, kills and reaps every
        process left in the namespace, then exits. ``exiting``: pytest's process has said
        its status but may still be in the kernel's teardown, so what it started may not be
        the init's children yet. Returns the leak lines for the unit's event pipe."""
        try:
            self.ctl.sendall(b"sweep-exiting" if exiting else b"sweep")
            chunks = []
            while True:
                data = self.ctl.recv(65536)
                if not data:
                    break
                chunks.append(data)
        finally:
            self.close()
        return [line + b"\n" for line in b"".join(chunks).splitlines() if line]

    def close(self):
        self.ctl.close()
        if self in _live:
            _live.remove(self)


def new_unit_init():
    """A new PID namespace with its init, from the factory."""
    if _factory is None:
        raise OSError("no init factory: the fork server was not started by racefree's init")
    _pid, sock = _factory
    sock.send(b"new")
    message, fds, _flags, _addr = socket.recv_fds(sock, 4096, 1)
    if not fds:
        raise OSError(message.decode("utf-8", "replace") or "the init factory has exited")
    init = UnitInit(int(message), socket.socket(fileno=fds[0]))
    _live.append(init)
    return init


def in_unit_process():
    """In pytest's process: no handle on the factory, an init or the server's namespace."""
    global _factory, _own_pid_ns
    if _factory is not None:
        _factory[1].close()
    for init in _live:
        init.ctl.close()
        if init.ns is not None:
            os.close(init.ns)
    del _live[:]
    if _own_pid_ns is not None:
        os.close(_own_pid_ns)
    _factory = _own_pid_ns = None


# The factory: a small process that forks each unit's init into a new PID namespace.


def _factory_loop(sock, host_proc):
    """Keeps one init ready, so that a unit never waits for its fork: the next is made while
    the unit runs."""
    own = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    # Children that exit are reaped by the kernel, here and (inherited) in every init: the
    # inits' orphans vanish as they die, as under any init, at no cost per process.
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    ready = _make_init(sock, own, host_proc)
    while True:
        try:
            request = sock.recv(16)
        except InterruptedError:
            continue
        if not request:
            os._exit(0)
        if isinstance(ready, str):
            sock.send(ready.encode("utf-8"))
        else:
            pid, mine = ready
            socket.send_fds(sock, [b"%d" % pid], [mine.fileno()])
            mine.close()
        ready = _make_init(sock, own, host_proc)


def _make_init(sock, own, host_proc):
    """Forks an init into a new PID namespace: (its pid, the factory's end of its socket),
    or why not."""
    mine = theirs = None
    try:
        mine, theirs = socket.socketpair()
        _check(_libc().unshare(_CLONE_NEWPID), "unshare(CLONE_NEWPID)")
        pid = os.fork()
        if pid == 0:
            try:
                sock.close()
                mine.close()
                _init(theirs, host_proc)
            finally:
                os._exit(70)
        _check(_libc().setns(own, _CLONE_NEWPID), "setns(CLONE_NEWPID) back")
        return pid, mine
    except OSError as error:
        if mine is not None:
            mine.close()
        return "making the unit's PID namespace: %s" % error
    finally:
        if theirs is not None:
            theirs.close()


# The unit's init: PID 1 of the unit's namespace. It waits for the server's word that
# pytest's process has exited; meanwhile everything orphaned in the namespace becomes its
# child, reaped as it dies. Then it stops what is left, names it (by the pid racefree sees,
# which racefree reports but never signals), kills it and exits.

# pytest's process, as the unit's namespace numbers it (the init is 1).
_UNIT_PID = 2
# Longest command line in a leak line: keeps each line one atomic pipe write.
_CMDLINE_MAX = 1024
_PIPE_BUF = 4096
# The host's /proc (an O_PATH descriptor from racefree's init): leaks are named by the pid
# racefree sees. Held by the factory and the inits; never by the server or pytest.
_host_proc = None


def _init(ctl, host_proc):
    """PID 1 of a unit's namespace. SIGCHLD is ignored (from the factory), so the kernel
    reaps each orphan as it dies: a test waiting for a daemon it stopped to be gone
    (kill(pid, 0) failing, /proc/<pid> vanishing) does not wait for the unit's end. No
    parent-death signal is needed: the init ends when the other end of its socket closes,
    held by the server (for the unit's init) or the factory (for the one kept ready)."""
    global _host_proc
    _host_proc = host_proc
    while True:
        try:
            # "sweep", or end of file if the server is gone: sweep all the same.
            word = ctl.recv(16)
            break
        except InterruptedError:
            continue
    lines = b""
    # pytest's process has exited, so all it left running is ours, or our children's. If it
    # is still exiting, what it started is still its children: look at every process.
    if word == b"sweep-exiting" or _has_children():
        leaks = _stop_leftovers()
        lines = b"".join(_leak_line(*leak) for leak in leaks)
        _kill_all()
    try:
        if lines:
            ctl.sendall(lines)
        # The server reads to the end: give it now, not after this process's teardown.
        ctl.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    os._exit(0)


def _has_children():
    """False if this process has no child, which after pytest's exit means the namespace has
    nothing left but pytest's process, a zombie the server reaps: the common case, one read."""
    try:
        fd = os.open("/proc/thread-self/children", os.O_RDONLY | os.O_CLOEXEC)
        try:
            return bool(os.read(fd, 64).strip())
        finally:
            os.close(fd)
    except OSError:
        return True  # no way to tell: look


def _members():
    """(pid in the mounted /proc, pid here) for every other process of this PID namespace.
    /proc is the server's (the init never mounts its own: that would cost each unit a mount
    namespace), which shows the slot's namespace, a parent of this one."""
    try:
        own = os.stat("/proc/self/ns/pid")
        me = os.readlink("/proc/self")
        names = os.listdir("/proc")
    except OSError:
        return []
    found = []
    for name in names:
        if not name.isdigit() or name == me:
            continue
        try:
            ns = os.stat("/proc/%s/ns/pid" % name)
        except OSError:
            continue  # gone meanwhile
        if (ns.st_dev, ns.st_ino) != (own.st_dev, own.st_ino):
            continue
        status = _read_proc(name, "status") or b""
        for line in status.splitlines():
            if line.startswith(b"NSpid:"):
                found.append((name, int(line.split()[-1])))
                break
    return found


def _stop_leftovers():
    """Freezes everything else in the namespace (SIGSTOP: nothing can fork while we look)
    and lists what is alive as (pid racefree sees, command line, test). Zombies are gone,
    only not yet reaped: not leaks."""
    try:
        # From a namespace's init, kill(-1) reaches every process of the namespace but itself.
        os.kill(-1, signal.SIGSTOP)
    except OSError:
        return []  # ESRCH: nobody is left
    leaks = []
    for name, pid in sorted(_members(), key=lambda member: member[1]):
        # PID 2 is pytest's process, the first the server forked into this namespace: by
        # now a zombie, or (when it told the server its status before exiting) still in
        # the kernel's teardown. Either way it is not left behind.
        if pid == _UNIT_PID or _is_zombie(name):
            continue
        leaks.append((_host_pid(pid), _cmdline(name), _test_of(name)))
    return leaks


def _read_proc(name, what):
    try:
        with open("/proc/%s/%s" % (name, what), "rb") as handle:
            return handle.read()
    except OSError:
        return None


def _is_zombie(name):
    stat = _read_proc(name, "stat")
    if stat is None:
        return True  # already gone
    # The state follows the parenthesised command name, which may itself contain ") ".
    rest = stat.rpartition(b") ")[2]
    return rest[:1] in (b"", b"Z", b"X")


def _cmdline(name):
    raw = _read_proc(name, "cmdline") or b""
    line = " ".join(w.decode("utf-8", "replace") for w in raw.split(b"\0") if w)
    encoded = line.encode("utf-8")
    if len(encoded) > _CMDLINE_MAX:
        line = encoded[:_CMDLINE_MAX].decode("utf-8", "ignore")
    return line


def _test_of(name):
    """The test that was running when the process (or its ancestor) started: the plugin
    keeps it in RACEFREE_TEST, which every process a test starts inherits."""
    for item in (_read_proc(name, "environ") or b"").split(b"\0"):
        if item.startswith(b"RACEFREE_TEST="):
            return item[len(b"RACEFREE_TEST="):].decode("utf-8", "replace")[:_CMDLINE_MAX] or None
    return None


def _host_pid(pid):
    """The pid racefree sees for `pid` (a pid in this namespace): a pidfd's fdinfo lists the
    pid as seen from the PID namespace of the /proc it is read through, and _host_proc is
    racefree's. Without it (the server was not started by racefree's init) the pid as the
    unit sees it: racefree only reports a leak's pid, it never signals it."""
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


def _leak_line(pid, cmdline, test):
    """One event line, below PIPE_BUF so that the server writes it atomically:
    {"e":"leak","pid":N,"cmdline":"...","test":"..."}."""
    message = {"e": "leak", "pid": pid, "cmdline": cmdline}
    if test:
        message["test"] = test
    line = (json.dumps(message, separators=(",", ":")) + "\n").encode("utf-8")
    if len(line) > _PIPE_BUF:  # only a command line full of escaped characters
        message.pop("test", None)
        message["cmdline"] = cmdline[:200]
        line = (json.dumps(message, separators=(",", ":")) + "\n").encode("utf-8")
    return line


def _kill_all():
    """SIGKILLs everything else in the namespace and waits until it is gone: with SIGCHLD
    ignored, waitpid fails (ECHILD) once every child has exited, and a process killed while
    it still had children hands them to us before it exits."""
    try:
        os.kill(-1, signal.SIGKILL)
    except OSError:
        return
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return
        except InterruptedError:
            continue
