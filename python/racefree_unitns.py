"""A forked unit's namespaces and init, for racefree's fork server (racefree_forkserver).

In namespace mode every unit runs in PID, mount and IPC namespaces of its own, with an init
as PID 1 that, when the unit is over, reports what it left running as leaks and kills it, as
racefree's init does for a spawned unit (crates/racefree-runner/src/isolation/linux).

Who forks what, and why (the costs are page tables and copied pages: forking the warm
server, some 100 MB, costs 3-4 ms of CPU; a small native process, a fraction of one):

  server ──fork──> pytest's process (PID 2 of the unit's namespace)
    │                 makes its own mount and IPC namespaces (``private_mounts``), drops
    │                 its capabilities and runs the unit
    └─ init factory: ``racefree __init-factory``, started by the server before pytest is
         │            imported (crates/racefree-runner/src/isolation/linux/factory.rs)
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

import os
import socket

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
_EXE_ENV = "RACEFREE_INIT_FACTORY_EXE_FD"
# (pid, socket) of the init factory, once started.
_factory = None
# The server's own PID namespace, to come back to after forking a unit into an init's.
_own_pid_ns = None
# Every unit init the server holds (the running unit's, and the one of the process forked
# ahead for the next unit), each closed once swept or given up.
_live = []


def start_factory():
    """Starts the init factory if this server is in namespace mode: racefree's init started
    it and passed the host's /proc and racefree's executable, named in
    RACEFREE_HOST_PROC_FD and RACEFREE_INIT_FACTORY_EXE_FD. Call it first thing, before
    pytest is imported: the factory is a fork of this process until it execs."""
    host_proc = os.environ.pop(_HOST_PROC_ENV, None)
    exe = os.environ.pop(_EXE_ENV, None)
    if host_proc and exe and _factory is None:
        fork_factory(int(host_proc), int(exe))


def fork_factory(host_proc, exe):
    """Starts ``racefree __init-factory`` from `exe` (a path, or a descriptor on the
    executable, which is closed) and gives it `host_proc` (None: leaks are named by their
    pid in the unit's namespace)."""
    global _factory
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    server = os.getpid()
    argv = ["racefree", "__init-factory", "--socket", str(theirs.fileno()), "--parent", str(server)]
    keep = {0, 1, 2, theirs.fileno()}
    if host_proc is not None:
        argv += ["--host-proc", str(host_proc)]
        keep.add(host_proc)
    if isinstance(exe, int):
        keep.add(exe)
    pid = os.fork()
    if pid == 0:
        try:
            ours.close()
            close_all_but(keep)
            for fd in (theirs.fileno(), host_proc):
                if fd is not None:
                    os.set_inheritable(fd, True)
            if isinstance(exe, int):
                # fexecve needs it open until the exec, not after: the factory and its
                # inits must not hold racefree's executable.
                os.set_inheritable(exe, False)
            os.execve(exe, argv, os.environ)
        except BaseException as error:  # noqa: BLE001 - the child must never return
            try:
                os.write(2, ("racefree: cannot start the init factory: %s\n" % error).encode())
            finally:
                os._exit(127)
        os._exit(127)
    theirs.close()
    for fd in (host_proc, exe if isinstance(exe, int) else None):
        if fd is not None:
            os.close(fd)
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
