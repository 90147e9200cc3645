"""racefree's fork server: one per worker slot, so every unit gets a fresh process at the cost
of a fork instead of an interpreter start-up.

racefree starts it as ``python -m racefree_forkserver`` with the slot's environment and
one end of a Unix stream socket whose descriptor number is in ``RACEFREE_FORKSERVER_FD``. The
server warms up (imports pytest and every installed plugin by running pytest once on an empty
directory, then imports the modules listed in the JSON file named by
``RACEFREE_FORKSERVER_PRELOAD``) and checks that the warm-up left it safe to fork. Then it
starts pytest itself with the arguments every unit shares (a JSON list in
``RACEFREE_FORKSERVER_ARGV``) and the run's paths (``RACEFREE_FORKSERVER_ANCHORS``), and
stops it once the session has started, or if that is not safe, just before pytest would
load conftest files (see ``_ForkPoint``): from there it forks one child per unit, and each
child carries on as ``python -m pytest <the unit's arguments>`` would from that point.
pytest's own set-up (registering some 40 plugins, reading the configuration file, building
the option parser, and at the later point the initial conftest files, the configure hooks
and the fixture scan) is paid once per slot instead of once per unit.

Protocol: one JSON object per line, each way.
  server -> racefree  {"pytest": "VERSION"}               it imported pytest
                      {"ready": true, "modules": N, "secs": S}
                      {"ready": false, "reason": "...", "module": "name" or null}
                                                          (then the server exits; racefree
                                                           spawns fresh interpreters instead)
  racefree -> server  {"op": "run", "argv": [...], "unit_args": [START, END], "env": {...},
                      "cwd": "..."} (argv[START:END] are the unit's own arguments, its
                      basetemp and files; the rest equals RACEFREE_FORKSERVER_ARGV) with three or
                      four descriptors passed alongside (SCM_RIGHTS): the unit's stdout, stderr
                      and event pipe, and on Linux a datagram socket on which the child says
                      hello first thing, so that the kernel tells racefree the child's pid as
                      racefree sees it (the server may run in a PID namespace of its own)
  server -> racefree  {"pid": P}                       the child runs
                      {"exited": P, "code": C}         it exited (or "signal": S), or said
                                                       its status and is exiting; the zombie
                                                       is kept, so its pid cannot be reused
                                                       while racefree may still signal it
  racefree -> server  {"op": "reap"}                   racefree forgot the pid; reap it
  server -> racefree  {"reaped": P}                    done (a child still exiting is reaped
                                                       later): the server reads nothing ahead
End of file on the socket means racefree is done: the server exits.

The child of each request but the first was forked ahead, while the previous unit ran, and
waited for its request (see _Spare); a unit's process says its exit status just before it
exits (see _exit), so the kernel's teardown of its address space is nobody's wait.

Namespace isolation (racefree's init started the server in the slot's namespaces and put
RACEFREE_PRIVATE_MOUNTS in the unit's environment): the child is PID 2 of a PID namespace of
its own, whose PID 1 is an init that reports what pytest left running as leaks and kills it;
the child makes mount and IPC namespaces with private /tmp, /dev/shm, /var/tmp and a fresh
/proc. See racefree_unitns for who forks what.

Why a fork is safe here: the server is single-threaded, holds no sockets but its own and has
no children when it forks; it checks this after every preloaded module and refuses (naming the
module) otherwise. A module imported here is shared state only in the sense that every child
starts from the same freshly imported copy; what one test file does to it is never seen by the
next file's process.
"""

import racefree_unitns as unitns

if __name__ == "__main__":
    # First of all, while this process is small: starting the init factory (racefree's own
    # executable) forks this process once before the exec, which costs what it has mapped.
    unitns.start_factory()

import atexit  # noqa: E402
import copy  # noqa: E402
import dataclasses  # noqa: E402
import gc  # noqa: E402
import importlib  # noqa: E402
import inspect  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import select  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import types  # noqa: E402

# Taken before pytest and the project are imported: what a bare interpreter and this server
# hold. The plugin learns as preloadable whatever a unit imports beyond this.
START_MODULES = frozenset(sys.modules)

import pytest  # noqa: E402
import racefree_fixturescan as fixturescan  # noqa: E402
import racefree_hotpages as hotpages  # noqa: E402

_FD_ENV = "RACEFREE_FORKSERVER_FD"
_PRELOAD_ENV = "RACEFREE_FORKSERVER_PRELOAD"
_ARGV_ENV = "RACEFREE_FORKSERVER_ARGV"
# The paths and node ids the run was given (a JSON list; empty: pytest's default): the server
# passes them to its own pytest.main, so the initial conftest files it loads are those plain
# `pytest <the same arguments>` loads. Units replace them with their own files.
_ANCHORS_ENV = "RACEFREE_FORKSERVER_ANCHORS"
# "conftest" keeps units forking at the conftest point (for comparisons; see _ForkPoint).
_POINT_ENV = "RACEFREE_FORK_POINT"
# "0" when racefree's slots keep every core busy: then copying a unit's pages ahead (see
# racefree_hotpages) only moves work onto a core another unit needs, and copies pages the
# unit would not have touched besides, so units neither learn nor copy pages ahead.
_COPY_AHEAD_ENV = "RACEFREE_FORKSERVER_COPY_AHEAD"

# In a child: "session" when it carried on from the server's started session, "adopted"
# when from the server's configuration at the conftest point, "fresh" when it had to
# configure pytest from scratch. Tests of racefree read it.
UNIT_CONFIG = None
# In a child: True if it was forked ahead of its request (see _Spare). Tests read it.
FORKED_AHEAD = False
# In a unit's process: (descriptor, pid) of the socket on which it tells the server its exit
# status just before it exits (see _exit), or None.
_EXIT_NOTICE = None
# In a unit's process: True if it lists the pages it copied from the server when it ends
# (see racefree_hotpages).
_LEARN_PAGES = False
# Which units of a server learn pages: the first few, then one in so many.
_LEARNING_UNITS = 3
_LEARN_EVERY = 50
# Whether units learn pages at all, and so whether spares copy any ahead (see _COPY_AHEAD_ENV).
_COPY_AHEAD = True
_MAX_LINE = 16 * 1024 * 1024


class _Conn:
    """Newline-delimited JSON over the socket, with descriptors received alongside.

    Descriptors arrive attached to the first bytes of the request they belong to. A read may
    return more than one request only if racefree sent the next before this one was answered,
    which the protocol never does (every request waits for its reply), so the descriptors of
    a read belong to the line it starts."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""
        self.pending = []  # [offset in buf, [fds]]

    def send(self, obj):
        data = (json.dumps(obj) + "\n").encode("utf-8")
        self.sock.sendall(data)

    def recv(self):
        """The next message and the descriptors that came with it; (None, []) at EOF."""
        while b"\n" not in self.buf:
            if len(self.buf) > _MAX_LINE:
                raise ValueError("racefree sent an oversized message")
            try:
                data, fds, _flags, _addr = socket.recv_fds(self.sock, 65536, 8)
            except InterruptedError:
                continue
            if fds:
                self.pending.append([len(self.buf), list(fds)])
            if not data:
                for _offset, batch in self.pending:
                    for fd in batch:
                        os.close(fd)
                self.pending = []
                return None, []
            self.buf += data
        end = self.buf.index(b"\n") + 1
        line, self.buf = self.buf[:end], self.buf[end:]
        fds = []
        rest = []
        for offset, batch in self.pending:
            if offset < end:
                fds.extend(batch)
            else:
                rest.append([offset - end, batch])
        self.pending = rest
        return json.loads(line.decode("utf-8")), fds


def _silenced(function):
    """Runs ``function`` with descriptors 1 and 2 on /dev/null: the warm-up's output is
    nobody's business."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        os.dup2(null, 2)
        return function()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (null,) + saved:
            os.close(fd)


def _load_plugins():
    """Runs pytest once on an empty directory, without conftest files or the project's
    configuration, so that pytest, its own plugins and every installed plugin are imported
    through pytest's assertion rewriter exactly as a real run imports them (importing them
    by hand would make every child warn that they cannot be rewritten).

    It runs in the units' working directory, not in the empty one: a module may keep the
    directory it was imported in. Hypothesis does (``Path.cwd() / ".hypothesis"``, its
    example database and Unicode tables); imported elsewhere, every forked unit would lose
    the project's saved examples and rebuild the tables (seconds per unit)."""
    empty = tempfile.mkdtemp(prefix="racefree-warm-")

    class Learner:
        """Every unit's session registers instances of the same classes (its Session,
        TerminalReporter, ...) as plugins: their fixture scan is worked out here."""

        def pytest_plugin_registered(self, plugin):
            fixturescan.learn([plugin])
            _without_xdist_servers(plugin)

    try:
        _silenced(
            lambda: pytest.main(
                [
                    "--collect-only",
                    "-q",
                    "--noconftest",
                    "-p",
                    "no:cacheprovider",
                    "-c",
                    os.devnull,
                    "--rootdir",
                    empty,
                    empty,
                ],
                plugins=[Learner()],
            )
        )
    finally:
        try:
            os.rmdir(empty)
        except OSError:
            pass


def _without_xdist_servers(plugin):
    """pytest-rerunfailures, when pytest-xdist is installed, starts a thread and a socket in
    every pytest process that is not an xdist worker (its ServerStatusDB), to share crash
    counts with xdist's workers, whether or not the run has any. A racefree unit is a pytest
    process without workers: there the server has nobody to serve, and the plugin's own
    StatusDB, which it uses when xdist is absent, behaves the same (the counts it would keep
    are only read in xdist's crash hook). Registered before its pytest_configure runs, the
    plugin is handed that one instead, so that the fork server stays single-threaded."""
    if getattr(plugin, "__name__", None) != "pytest_rerunfailures":
        return
    local = getattr(plugin, "StatusDB", None)
    if isinstance(getattr(plugin, "ServerStatusDB", None), type) and isinstance(local, type):
        plugin.ServerStatusDB = local


def _thread_names():
    """What started each thread but this one, as far as Python knows (``module.function``
    of its target, else its name): for the line that says why the server will not fork."""
    names = []
    for thread in threading.enumerate():
        if thread is threading.current_thread():
            continue
        target = getattr(thread, "_target", None)
        module = getattr(target, "__module__", None)
        function = getattr(target, "__qualname__", None)
        names.append("%s.%s" % (module, function) if module and function else thread.name)
    return names


def _native_threads():
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return threading.active_count()


def _children():
    """Pids of this process's children (Linux) but the init factory's, else an empty list."""
    found = []
    try:
        for task in os.listdir("/proc/self/task"):
            with open("/proc/self/task/%s/children" % task) as handle:
                found.extend(handle.read().split())
    except OSError:
        pass
    return [pid for pid in found if int(pid) != unitns.factory_pid()]


def _sockets(own_fd):
    count = 0
    try:
        for name in os.listdir("/proc/self/fd"):
            if int(name) == own_fd:
                continue
            try:
                if os.readlink("/proc/self/fd/" + name).startswith("socket:"):
                    count += 1
            except OSError:
                pass
    except OSError:
        pass
    return count


# (the control socket's descriptor, how many sockets the server held before warming up)
_SOCKET_BASELINE = [None, 0]


def _unsafe_now():
    """Why forking now would be unsafe, or None (once main has taken the baseline)."""
    return _unsafe(*_SOCKET_BASELINE)


def _unsafe(own_fd, base_sockets):
    """Why forking now would be unsafe, or None."""
    if threading.active_count() > 1 or _native_threads() > 1:
        names = _thread_names()
        return "it started a thread" + (" (%s)" % ", ".join(names) if names else "")
    if _children():
        return "it started a child process"
    if _sockets(own_fd) > base_sockets:
        return "it left a socket open"
    return None


def _warm_up(own_fd, base_sockets):
    """Imports what units will need. Returns (module count, reason, module): reason is None
    when forking is safe, else why not, and module the preloaded module to blame."""
    try:
        _load_plugins()
    except BaseException as error:  # noqa: BLE001 - any failure means: do not fork
        return 0, "starting pytest failed: %r" % (error,), None
    why = _unsafe(own_fd, base_sockets)
    if why:
        return 0, "loading pytest's plugins: %s" % why, None
    names = []
    path = os.environ.pop(_PRELOAD_ENV, None)
    if path:
        with open(path, encoding="utf-8") as handle:
            names = json.load(handle)
    count = 0
    for name in names:
        if name in sys.modules:
            continue
        try:
            _silenced(lambda: importlib.import_module(name))
        except ModuleNotFoundError as error:
            if error.name and (name == error.name or name.startswith(error.name + ".")):
                # Not installed here (history learned it with another interpreter, or it
                # was uninstalled): nothing was imported, nothing to fear. Units that do not
                # import it any more let history forget it.
                continue
            reason = "preloading module %s failed: %s: %s" % (name, type(error).__name__, error)
            return count, reason, name
        except BaseException as error:  # noqa: BLE001
            reason = "preloading module %s failed: %s: %s" % (name, type(error).__name__, error)
            return count, reason, name
        why = _unsafe(own_fd, base_sockets)
        if why:
            return count, "preloading module %s: %s" % (name, why), name
        count += 1
    return count, None, None


def _set_death_signal():
    """Linux: the child dies with the server, so nothing outlives racefree."""
    if not sys.platform.startswith("linux"):
        return
    try:
        pr_set_pdeathsig = 1
        unitns._libc().prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _reset_signals():
    """A fresh interpreter's dispositions: Python's KeyboardInterrupt for SIGINT, SIGPIPE
    ignored, everything else the default."""
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2,
                signal.SIGCHLD, signal.SIGALRM):
        try:
            signal.signal(sig, signal.SIG_DFL)
        except (OSError, ValueError):
            pass
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)


def _exit(code):
    """Ends the child as an interpreter would end: wait for non-daemon threads, run atexit
    handlers, flush; then leave without the server's own interpreter teardown."""
    try:
        shutdown = getattr(threading, "_shutdown", None)
        if shutdown is not None:
            shutdown()
    except BaseException:  # noqa: BLE001
        pass
    try:
        atexit._run_exitfuncs()
    except BaseException:  # noqa: BLE001
        pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:  # noqa: BLE001
            pass
    code &= 0xFF
    if _EXIT_NOTICE is not None and _EXIT_NOTICE[1] == os.getpid():
        # Nothing of this process runs any more: its descriptors close now, so racefree
        # sees its pipes end, and the server hears the status now, not after the kernel
        # has torn down the address space (milliseconds for a fork of a large server).
        # Only the unit's own process tells: a process a test forked may end here too.
        fd = _EXIT_NOTICE[0]
        unitns.close_all_but({fd})
        notice = b"exit %d\n" % code
        if _LEARN_PAGES:
            # After the descriptors are closed: racefree is not kept waiting for the end of
            # the unit's pipes while this process reads its page map.
            try:
                pages = hotpages.learn()
            except BaseException:  # noqa: BLE001 - nothing may stop this process's exit
                pages = b""
            notice = b"pages %d\n" % len(pages) + pages + notice
        try:
            while notice:
                notice = notice[os.write(fd, notice):]
        except OSError:
            pass
    os._exit(code)


def _prepare_child(conn, request, fds, namespace_error):
    """In the forked child: becomes the unit's process (its descriptors, environment,
    private mounts, working directory, signal dispositions, random seed, ``sys.argv``).
    ``namespace_error`` says why the server could not give it the PID namespace it asked
    for: the unit must not run with less isolation than asked for."""
    conn.sock.close()
    unitns.in_unit_process()
    if len(fds) == 4:
        hello = fds.pop()
        os.write(hello, b"hello")
        os.close(hello)
    os.setpgid(0, 0)
    _set_death_signal()
    out, err, events = fds
    os.dup2(out, 1)
    os.dup2(err, 2)
    os.close(out)
    os.close(err)
    os.environ.update(request.get("env") or {})
    os.environ["RACEFREE_EVENT_FD"] = str(events)
    mounts = os.environ.pop("RACEFREE_PRIVATE_MOUNTS", None)
    if mounts is not None:
        if namespace_error:
            raise OSError(namespace_error)
        unitns.private_mounts(json.loads(mounts))
        unitns.drop_capabilities()
    os.chdir(request["cwd"])
    _reset_signals()
    if "random" in sys.modules:
        sys.modules["random"].seed()
    import pytest.__main__ as pytest_main

    # As under `python -m pytest`: multiprocessing's spawn start method looks at
    # __main__ to decide what its workers import.
    sys.modules["__main__"] = pytest_main
    sys.argv = [pytest_main.__file__] + list(request["argv"])


def _pytest_main(argv, **kwargs):
    """``pytest.main`` as an exit status, whatever it raises."""
    try:
        code = pytest.main(argv, **kwargs)
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
    return int(code)


def _run_fresh(argv):
    """Runs the unit with a pytest configuration of its own, built from scratch (the slow
    path, for a unit whose arguments the server's configuration does not fit)."""
    try:
        from _pytest.assertion.rewrite import AssertionRewritingHook

        # The server's configuration installed pytest's import hook; the new one installs
        # its own, and two would both claim the test modules.
        sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, AssertionRewritingHook)]
    except ImportError:
        pass
    return _pytest_main(list(argv))


def _exit_fields(pid):
    while True:
        try:
            info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
        except InterruptedError:
            continue
        if info is None:
            continue
        if info.si_code != os.CLD_EXITED:
            return {"exited": pid, "signal": info.si_status}
        return {"exited": pid, "code": info.si_status}


class _Spare:
    """The process of the next unit, forked ahead of its request: it waits on its end of a
    socket pair for the request and the unit's descriptors and only then becomes the unit's
    process (see _serve). The server forks it while the previous unit runs, so that the
    fork (page tables: milliseconds for a server of some 40 MB) and, in namespace mode,
    the new PID namespace are not on the path from one unit to the next."""

    def __init__(self, pid, sock, init, namespaced):
        self.pid = pid
        self.sock = sock
        self.init = init
        self.namespaced = namespaced

    @staticmethod
    def fork(conn, namespaced, inherited, ahead):
        """Forks a spare, in a new PID namespace with its init if ``namespaced``. Returns
        ``(spare, None)`` in the server; in the spare, once handed its request, ``(None,
        (request, fds, namespace_error, judgement))``. ``inherited``: descriptors and
        sockets of the server's the spare must not keep (closed as what they are: a socket
        object left to the collector would warn); ``ahead``: forked before its request came."""
        # Namespace isolation: the child is born in a new PID namespace, whose init sweeps
        # up after it.
        init = error = None
        if namespaced:
            try:
                init = unitns.new_unit_init()
                init.enter()
            except OSError as problem:
                error = "namespace isolation: %s" % problem
                if init is not None:
                    init.close()
                    init = None
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            pid = os.fork()
        except OSError:
            ours.close()
            theirs.close()
            if init is not None:
                init.leave()
                init.close()
            raise
        if pid == 0:
            ours.close()
            conn.sock.close()
            for held in inherited:
                if isinstance(held, int):
                    os.close(held)
                else:
                    held.close()
            return None, _Spare._await(theirs, error, ahead)
        theirs.close()
        if init is not None:
            init.leave()
        return _Spare(pid, ours, init, namespaced), None

    @staticmethod
    def _await(sock, error, ahead):
        """In the spare: waits for its request; exits if the server gives it up."""
        _set_death_signal()
        # Until it is a unit: a Ctrl-C meant for racefree's process group is not its business
        # (_prepare_child restores the handler).
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if ahead and sys.platform.startswith("linux"):
            # While the previous unit runs: the pages units copy, copied now, but never
            # at the cost of starting late.
            poller = select.poll()
            poller.register(sock.fileno(), select.POLLIN)
            hotpages.copy_ahead(unitns._libc(), lambda: bool(poller.poll(0)))
        message, fds = _Conn(sock).recv()
        if message is None:
            os._exit(0)
        global FORKED_AHEAD, _EXIT_NOTICE, _LEARN_PAGES
        FORKED_AHEAD = ahead
        _LEARN_PAGES = bool(message.get("learn"))
        if hasattr(os, "pidfd_open"):
            # The same socket carries the exit notice back (see _exit). Without pidfds
            # (macOS) the server waits for the exit itself (see wait_exit).
            _EXIT_NOTICE = (sock.detach(), os.getpid())
        else:
            sock.close()
        return message["request"], fds, error, message.get("judgement")

    def hand(self, request, fds, judgement, learn):
        """Gives the spare its unit (``learn``: it lists the pages it copied when it ends):
        False if it is gone (then discard it)."""
        message = {"request": request, "judgement": judgement, "learn": learn}
        data = (json.dumps(message) + "\n").encode("utf-8")
        try:
            # The descriptors travel with the first byte, as _Conn.recv expects.
            socket.send_fds(self.sock, [data[:1]], fds)
            self.sock.sendall(data[1:])
        except OSError:
            return False
        self.sock.shutdown(socket.SHUT_WR)
        return True

    def wait_exit(self):
        """Once handed its unit: ``(exited message, early, pages)``. ``early``: the process
        said its status just before exiting and may still be in the kernel's teardown (its
        zombie comes soon; reap it without blocking). ``pages``: the pages it listed, if it
        was asked to (see racefree_hotpages), else empty."""
        pidfd = None
        if hasattr(os, "pidfd_open"):
            try:
                pidfd = os.pidfd_open(self.pid)
            except OSError:
                pidfd = None
        try:
            if pidfd is None:
                # Not listening: a unit writing its notice must not block on a full socket.
                self.sock.close()
                return _exit_fields(self.pid), False, b""
            poller = select.poll()
            poller.register(self.sock.fileno(), select.POLLIN)
            poller.register(pidfd, select.POLLIN)
            notice = b""
            while True:
                try:
                    ready = [fd for fd, _ in poller.poll()]
                except InterruptedError:
                    continue
                if self.sock.fileno() in ready:
                    data = self.sock.recv(1 << 16)
                    if data:
                        notice += data
                        code, pages = _parse_exit_notice(notice)
                        if code is not None:
                            return {"exited": self.pid, "code": code}, True, pages
                        continue
                    # Its end closed without a (whole) word: a signal, or an exit elsewhere.
                    poller.unregister(self.sock.fileno())
                if pidfd in ready:
                    return _exit_fields(self.pid), False, b""
        finally:
            if pidfd is not None:
                os.close(pidfd)
            self.sock.close()

    def discard(self):
        """Ends a spare that will not be used (the run is over, or it is gone)."""
        self.sock.close()
        try:
            os.kill(self.pid, signal.SIGKILL)
        except OSError:
            pass
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass
        if self.init is not None:
            self.init.close()


def _parse_exit_notice(notice):
    """``(code, pages)`` from a unit's whole exit notice (see _exit): ``[pages N\\n<N
    bytes>]exit CODE\\n``; ``(None, None)`` while it is incomplete."""
    pages = b""
    if notice.startswith(b"pages "):
        header, newline, rest = notice.partition(b"\n")
        if not newline:
            return None, None
        try:
            size = int(header[len(b"pages "):])
        except ValueError:
            return None, None
        if len(rest) < size:
            return None, None
        pages, notice = rest[:size], rest[size:]
    if not (notice.startswith(b"exit ") and notice.endswith(b"\n")):
        return None, None
    try:
        return int(notice[len(b"exit "):-1]), pages
    except ValueError:
        return None, None


def _serve(conn, judge=None):
    """Runs each request in a child of its own. Returns ``(request, fds, namespace_error,
    judgement)`` in each child (see _prepare_child; ``judgement`` is what ``judge(request)``
    said in the server, where it is cheap and can be remembered for the next child); in the
    server, never returns: it exits when racefree closes the socket.

    The child of each request but the first was forked ahead, while the previous unit ran
    (see _Spare); every unit of a run has the same isolation, so the spare's is right (a
    spare that does not fit is discarded)."""
    spare = None
    unreaped = []
    units = 0
    # Pages the last learning unit listed, counted once the next unit runs (see below).
    learned = None
    while True:
        _reap(unreaped, block=False)
        request, fds = conn.recv()
        if request is None:
            if spare is not None:
                spare.discard()
            os._exit(0)
        if request.get("op") != "run" or len(fds) not in (3, 4):
            for fd in fds:
                os.close(fd)
            conn.send({"error": "expected a run request with three or four descriptors"})
            continue
        judgement = judge(request) if judge is not None else None
        namespaced = "RACEFREE_PRIVATE_MOUNTS" in (request.get("env") or {})
        if spare is not None and spare.namespaced != namespaced:
            spare.discard()
            spare = None
        units += 1
        learn = _COPY_AHEAD and (units <= _LEARNING_UNITS or units % _LEARN_EVERY == 0)
        while True:
            if spare is None:
                # The request's descriptors go to the spare with the request: the copies
                # it would inherit here are not its to keep.
                spare, child = _Spare.fork(conn, namespaced, fds, ahead=False)
                if child is not None:
                    return child
            if spare.hand(request, fds, judgement, learn):
                break
            spare.discard()
            spare = None
        unit, spare = spare, None
        pid = unit.pid
        # Kept until the init has swept: the leaks it finds go on the unit's event pipe.
        events = os.dup(fds[2]) if unit.init is not None else None
        for fd in fds:
            os.close(fd)
        try:
            os.setpgid(pid, pid)
        except OSError:
            pass  # the child did it first, or already exited
        conn.send({"pid": pid})
        if learned:
            # Counted now, while this unit runs, not between the previous unit's end and
            # this one's request (milliseconds of Python each time a unit learns): the
            # process forked ahead next is the first to copy them either way.
            hotpages.remember(learned, unitns._libc())
            learned = None
        try:
            # The running unit's socket and event pipe are not the next one's.
            keep_out = (unit.sock,) if events is None else (unit.sock, events)
            spare, child = _Spare.fork(conn, namespaced, keep_out, ahead=True)
        except OSError:
            spare, child = None, None  # forked on request instead
        if child is not None:
            return child
        exited, early, pages = unit.wait_exit()
        if unit.init is not None:
            _report_leaks(unit.init, events, exiting=early)
        conn.send(exited)
        reply, extra = conn.recv()
        for fd in extra:
            os.close(fd)
        if reply is None:
            if spare is not None:
                spare.discard()
            os._exit(0)
        # Its zombie kept its pid from reuse while racefree might signal it; racefree has
        # let go. One that said its status early may still be tearing down: reaped later.
        unreaped.append(pid)
        _reap(unreaped, block=not early)
        conn.send({"reaped": pid})
        learned = pages or None


def _reap(pids, block):
    """Reaps the units in ``pids`` that have exited (every one, if ``block``)."""
    for pid in list(pids):
        try:
            done, _status = os.waitpid(pid, 0 if block else os.WNOHANG)
        except ChildProcessError:
            done = pid
        if done:
            pids.remove(pid)


def _report_leaks(init, events, exiting):
    """Has the unit's init sweep its namespace and writes what it found on the event pipe,
    one line per write (each below PIPE_BUF: lines never interleave)."""
    try:
        for line in init.sweep(exiting):
            os.write(events, line)
    except OSError:
        pass  # racefree stopped reading: nobody to tell
    finally:
        os.close(events)


class _ForkPoint:
    """A pytest plugin for the server's own ``pytest.main``: it stops that run where
    everything that does not depend on the unit is done, and forks there for every unit.
    Each child adopts its unit's arguments and carries on from that point exactly as
    ``pytest <its arguments>`` would.

    There are two such points, tried latest first:

    * **session** (``pytest_collection``): pytest is configured, the initial conftest files
      are loaded, ``pytest_configure`` and ``pytest_sessionstart`` have run, the fixture
      manager has scanned every plugin. A child only takes its basetemp and its files and
      collects them: some 15 ms less per unit than the conftest point. The server took
      everything a unit would otherwise set up, so it is used only when what ran is safe to
      share: no plugin beyond pytest's own (and Hypothesis's and pytest-rerunfailures's,
      whose session hooks are safe to share, see _SHARED_SESSION_OK) has session set-up or
      tear-down hooks, which would run once per server but
      tear down once per unit, and the server is still single-threaded, without children
      or sockets. Each child starts pytest's output capture afresh and points its
      faulthandler at its own stderr.
    * **conftest** (``pytest_load_initial_conftests``): pytest, its plugins and the
      installed ones registered, the configuration file read, the command line's options
      known; conftest files, configure hooks and the session are each child's own.

    The server forks a second server at the conftest point, which goes on to the session
    point. If it gets there safely it serves and the first one only waits; otherwise it
    says why and exits, and the first one serves from the conftest point.

    The hooks are public, but what a child adjusts (the parsed arguments,
    ``known_args_namespace``, ``invocation_params``, ``args``, the basetemp factory) is how
    pytest works inside. So the child checks that its arguments are the server's plus its
    own basetemp and files, and that pytest would choose the same rootdir and configuration
    file for them; otherwise it runs the unit with a fresh ``pytest.main`` (the slow path,
    still a fork)."""

    def __init__(self, conn, server_argv, anchors, ready, try_session_point):
        self.conn = conn
        self.server_argv = server_argv
        self.anchors = anchors
        self.ready = ready
        self.try_session_point = try_session_point
        # In the server that tries the session point: the pipe on which it tells the
        # conftest-point server whether it serves.
        self.verdict = None
        self.in_child = False

    def pytest_plugin_registered(self, plugin):
        # A plugin named with -p (not installed, so not loaded by the warm-up) too.
        _without_xdist_servers(plugin)

    @pytest.hookimpl(hookwrapper=True, tryfirst=True)
    def pytest_load_initial_conftests(self, early_config, parser, args):
        fixturescan.learn(early_config.pluginmanager.get_plugins())
        fixturescan.install()
        declined = None
        if self.try_session_point:
            declined = self._fork_session_server()
            if declined is None:
                yield  # the session-point server: on to the configure hooks
                return
        # Here, not before the fork: the session-point server judges its own modules.
        _prime_plugin(early_config)
        self.ready(point="conftest", declined=declined)
        request, fds, namespace_error, _ = _serve(self.conn)
        self.in_child = True
        try:
            _prepare_child(self.conn, request, fds, namespace_error)
            adopted = _adopt(early_config, parser, args, request, self.server_argv, self.anchors)
        except BaseException:  # noqa: BLE001 - the unit must still run, or say why not
            import traceback

            traceback.print_exc()
            _exit(70)
        global UNIT_CONFIG
        UNIT_CONFIG = "adopted" if adopted else "fresh"
        if not adopted:
            _exit(_run_fresh(request["argv"]))
        yield

    @pytest.hookimpl(hookwrapper=True, tryfirst=True)
    def pytest_collection(self, session):
        if self.verdict is None:
            yield  # a unit's own collection
            return
        config = session.config
        why = _session_point_unsafe(config, self.anchors)
        if why is None:
            capture = config.pluginmanager.getplugin("capturemanager")
            if capture is not None:
                # Each child captures into files of its own (see _take_unit).
                capture.stop_global_capturing()
            _prime_plugin(config)
            _prime_hypothesis(config)
            self.ready(point="session")
        _tell(self.verdict, "ok" if why is None else why)
        self.verdict = None
        if why is not None:
            os._exit(0)
        fits = {}
        request, fds, namespace_error, own = _serve(
            self.conn, lambda request: _unit_fits(config, request, self.server_argv, fits)
        )
        self.in_child = True
        try:
            _prepare_child(self.conn, request, fds, namespace_error)
            taken = own is not None
            if taken:
                _take_unit(session, request, *own)
        except BaseException:  # noqa: BLE001
            import traceback

            traceback.print_exc()
            _exit(70)
        global UNIT_CONFIG
        UNIT_CONFIG = "session" if taken else "fresh"
        if not taken:
            _forget_conftests(config)
            _exit(_run_fresh(request["argv"]))
        plugin = sys.modules.get("racefree_pytest")
        if plugin is not None and hasattr(plugin, "begin_unit"):
            plugin.begin_unit(session)
        yield

    def _fork_session_server(self):
        """Forks the server that tries the session point. Returns None in it; here, once it
        has answered, why it will not serve (or never returns, if it serves)."""
        sys.stdout.flush()
        sys.stderr.flush()
        read_end, write_end = os.pipe()
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:
            os.close(read_end)
            _set_death_signal()
            if os.getppid() != parent:
                os._exit(0)
            self.verdict = write_end
            return None
        os.close(write_end)
        answer = _read_to_end(read_end)
        if answer == b"ok":
            # It serves. This server only waits for it (and keeps the init factory,
            # whose life is tied to this process, alive), then exits with it.
            self.conn.sock.close()
            while True:
                try:
                    os.waitpid(pid, 0)
                    break
                except InterruptedError:
                    continue
                except ChildProcessError:
                    break
            os._exit(0)
        _pid, status = os.waitpid(pid, 0)
        if answer:
            return answer.decode("utf-8", "replace")
        code = os.waitstatus_to_exitcode(status)
        how = "exit status %d" % code if code >= 0 else "signal %d" % -code
        return "it ended (%s) before the session started" % how


def _prime_plugin(config):
    """Has racefree's plugin judge now, once, the modules the server holds (see
    ``racefree_pytest.prime_preloadable``)."""
    plugin = sys.modules.get("racefree_pytest")
    if plugin is not None and hasattr(plugin, "prime_preloadable"):
        plugin.prime_preloadable(config)


def _prime_hypothesis(config):
    """Hypothesis's pytest plugin, in the first collection that has a Hypothesis test, has
    every module imported so far scanned for constants to try (``_get_local_constants``);
    later calls scan only modules new since. Each unit would scan every module the server
    holds again: on attrs' suite 40 to 80 ms per file with a Hypothesis test, where a serial
    pytest pays it once. Scanned here once, a unit scans only what it imported itself and
    finds the same constants it would have found scanning everything.

    Only when the project's own modules held here (conftest files, preloaded helpers) use
    Hypothesis: a project that imports it only in test files is not recognised, and its
    units scan for themselves, as before. The scan is an optimisation: if anything fails,
    Hypothesis's state is put back as it was and each unit scans for itself."""
    providers = sys.modules.get("hypothesis.internal.conjecture.providers")
    if type(providers) is not types.ModuleType:
        return
    scan = providers.__dict__.get("_get_local_constants")
    seen = providers.__dict__.get("_seen_modules")
    if not callable(scan) or type(seen) is not set:
        return
    saved = (set(seen), providers.__dict__.get("_sys_modules_len"))
    try:
        if not _project_uses_hypothesis(config):
            return
        scan()
        # A unit's first scan then walks sys.modules whatever its length, as a fresh
        # process's does (it only looks up each module in the set of seen ones).
        providers._sys_modules_len = None
    except Exception:  # noqa: BLE001 - see above: leave it to the units
        seen.clear()
        seen.update(saved[0])
        providers._sys_modules_len = saved[1]


def _project_uses_hypothesis(config):
    """True if a module from the rootdir (not from an environment inside it, nor Hypothesis
    itself) refers to Hypothesis or to a function or class of it. Reads only the modules'
    and values' own dictionaries and types: a lazy module or proxy in there must not be
    woken by the question."""
    root = str(config.rootpath) + os.sep
    for name, module in list(sys.modules.items()):
        if type(module) is not types.ModuleType:
            continue
        path = module.__dict__.get("__file__")
        if not isinstance(path, str) or not path.startswith(root):
            continue
        if os.sep + "site-packages" + os.sep in path:
            continue
        if _in_hypothesis(name):
            continue
        for value in list(module.__dict__.values()):
            kind = type(value)
            if kind is types.ModuleType:
                owner = value.__dict__.get("__name__")
            elif kind is types.FunctionType:
                owner = value.__module__
            elif issubclass(kind, type):
                # type's own descriptor: a metaclass's __getattribute__ is not asked.
                owner = _TYPE_MODULE.__get__(value, kind)
            else:
                continue
            if isinstance(owner, str) and _in_hypothesis(owner):
                return True
    return False


_TYPE_MODULE = type.__dict__["__module__"]


def _in_hypothesis(name):
    return name == "hypothesis" or name.startswith("hypothesis.")


def _tell(fd, text):
    try:
        os.write(fd, text.encode("utf-8"))
    finally:
        os.close(fd)


def _read_to_end(fd):
    chunks = []
    while True:
        try:
            data = os.read(fd, 4096)
        except InterruptedError:
            continue
        if not data:
            break
        chunks.append(data)
    os.close(fd)
    return b"".join(chunks)


# Plugins whose session hooks may run once per server: pytest's own, racefree's,
# Hypothesis's (its pytest_sessionstart only counts, in memory) and pytest-rerunfailures's
# (with pytest-xdist installed, its pytest_sessionstart keeps the session object, which a
# unit carries on with; its pytest_sessionfinish reads the unit's own items).
_SHARED_SESSION_OK = (
    "_pytest",
    "pytest",
    "racefree_pytest",
    "_hypothesis_pytestplugin",
    "pytest_rerunfailures",
)
_SESSION_HOOKS = ("pytest_sessionstart", "pytest_sessionfinish", "pytest_unconfigure")


def _session_point_unsafe(config, anchors):
    """Why units must not be forked at the session point, or None."""
    known = config.known_args_namespace
    if list(getattr(known, "file_or_dir", None) or []) != anchors:
        return "the run's pytest arguments name paths of their own"
    if getattr(config.option, "pyargs", False):
        return "--pyargs"
    if getattr(config.option, "debug", None):
        return "--debug writes one trace file per pytest process"
    missing = _missing_internals(config)
    if missing:
        return "this pytest has no %s, which a unit adjusts there" % missing
    for hook in _SESSION_HOOKS:
        for impl in getattr(config.pluginmanager.hook, hook).get_hookimpls():
            plugin = impl.plugin
            module = getattr(plugin, "__name__", None) or type(plugin).__module__
            if module.split(".")[0] not in _SHARED_SESSION_OK:
                name = impl.plugin_name
                if name.isdigit():
                    # Registered without a name: pluggy named it by its id.
                    name = "%s.%s" % (type(plugin).__module__, type(plugin).__qualname__)
                return "plugin %s has %s, which must run in every unit" % (name, hook)
    why = _unsafe_now()
    if why:
        return "after configuring pytest and starting the session, %s" % why
    return None


def _unit_fits(config, request, server_argv, fits):
    """In the session-point server, before forking: ``(basetemp, files)`` if the unit's
    arguments are the server's plus its own basetemp and files, and pytest would choose the
    server's rootdir and configuration file for those files; else None. ``fits`` remembers
    the answer per set of directories (reading configuration files costs milliseconds)."""
    argv = list(request["argv"])
    span = request.get("unit_args")
    if not span or argv[: span[0]] + argv[span[1] :] != server_argv:
        return None
    own = argv[span[0] : span[1]]
    if not own or not own[0].startswith("--basetemp="):
        return None
    basetemp, files = own[0][len("--basetemp=") :], own[1:]
    if not files or any(f.startswith("-") for f in files):
        return None
    base = str(config.invocation_params.dir)
    if os.path.abspath(request["cwd"]) != os.path.abspath(base):
        return None
    dirs = frozenset(os.path.dirname(os.path.join(base, f.split("::", 1)[0])) for f in files)
    if dirs not in fits:
        known = copy.copy(config.known_args_namespace)
        known.file_or_dir = list(files)
        fits[dirs] = _same_setup(config, known)
    return (basetemp, list(files)) if fits[dirs] else None


def _missing_internals(config):
    """The first of pytest's internals that _take_unit adjusts which this pytest lacks (an
    older or newer one may), or None."""
    try:
        from _pytest.config import Config
        from _pytest.tmpdir import TempPathFactory
    except ImportError as error:
        return str(error.name)
    if not hasattr(Config, "ArgsSource"):
        return "Config.ArgsSource"
    factory = getattr(config, "_tmp_path_factory", None)
    if not isinstance(factory, TempPathFactory) or not hasattr(factory, "__dict__"):
        return "config._tmp_path_factory as _take_unit renews it"
    capture = config.pluginmanager.getplugin("capturemanager")
    for method in ("stop_global_capturing", "start_global_capturing", "suspend_global_capture"):
        if capture is not None and not hasattr(capture, method):
            return "CaptureManager.%s" % method
    return None


def _take_unit(session, request, basetemp, files):
    """Makes the server's started session the unit's (its arguments fit: _unit_fits):
    its arguments, basetemp, output capture and faulthandler."""
    config = session.config
    argv = list(request["argv"])
    known = copy.copy(config.known_args_namespace)
    known.file_or_dir = list(files)
    known.basetemp = basetemp
    from _pytest.config import Config
    from _pytest.tmpdir import TempPathFactory

    config.known_args_namespace = known
    config.option.basetemp = basetemp
    config.option.file_or_dir = list(files)
    config.args = list(files)
    config.args_source = Config.ArgsSource.ARGS
    config.invocation_params = dataclasses.replace(config.invocation_params, args=tuple(argv))
    # Renewed in place: pytest's legacy tmpdir factory wraps this very object.
    factory = getattr(config, "_tmp_path_factory", None)
    if factory is not None:
        vars(factory).update(vars(TempPathFactory.from_config(config, _ispytest=True)))
    _renew_output(config)


def _renew_output(config):
    """The server's output capture and faulthandler wrote where the server writes: this
    child's go where its unit writes (descriptors 1 and 2 by now)."""
    try:
        from _pytest.faulthandler import fault_handler_stderr_fd_key

        stderr_copy = config.stash.get(fault_handler_stderr_fd_key, None)
    except ImportError:
        stderr_copy = None
    if stderr_copy is not None:
        os.dup2(2, stderr_copy, inheritable=False)
    capture = config.pluginmanager.getplugin("capturemanager")
    if capture is not None:
        capture.start_global_capturing()
        capture.suspend_global_capture()
    reporter = config.pluginmanager.getplugin("terminalreporter")
    if reporter is not None and hasattr(reporter, "_session_start"):
        from _pytest import timing

        reporter._session_start = timing.Instant()


def _forget_conftests(config):
    """Before a fresh ``pytest.main`` in a child of the session-point server: conftest
    modules are imported again, as a process of its own would import them."""
    for plugin in config.pluginmanager.get_plugins():
        path = getattr(plugin, "__file__", None) or ""
        name = getattr(plugin, "__name__", None)
        if name and os.path.basename(path) == "conftest.py" and sys.modules.get(name) is plugin:
            del sys.modules[name]


def _adopt(config, parser, args, request, server_argv, anchors):
    """Makes the server's half-built configuration the unit's: True if it fits."""
    argv = list(request["argv"])
    span = request.get("unit_args")
    if not span or argv[: span[0]] + argv[span[1] :] != server_argv:
        return False
    # ``args`` is the server's argument list (its own and the run's paths) with what pytest
    # put in front of it (addopts from the environment and the configuration file), changed
    # in place from here on.
    own = server_argv + anchors
    kept = len(args) - len(own)
    if kept < 0 or args[kept:] != own:
        return False
    if os.path.abspath(os.getcwd()) != os.path.abspath(str(config.invocation_params.dir)):
        return False
    new_args = args[:kept] + argv
    known = parser.parse_known_args(new_args, namespace=copy.copy(config.option))
    if not _same_setup(config, known):
        return False
    if known.confcutdir is None:
        # As pytest's own parse does before loading conftest files.
        known.confcutdir = str(config.inipath.parent if config.inipath else config.rootpath)
    args[:] = new_args
    config.known_args_namespace = known
    config.invocation_params = dataclasses.replace(config.invocation_params, args=tuple(argv))
    return True


def _same_setup(config, known):
    """True if pytest would pick the server's rootdir and configuration file for the
    unit's arguments too (a configuration file in a subdirectory could differ)."""
    try:
        from _pytest.config.findpaths import determine_setup

        wanted = inspect.signature(determine_setup).parameters
        given = {
            "inifile": known.inifilename,
            "override_ini": known.override_ini,
            "args": known.file_or_dir,
            "rootdir_cmd_arg": known.rootdir or None,
            "invocation_dir": config.invocation_params.dir,
        }
        found = determine_setup(**{k: v for k, v in given.items() if k in wanted})
        return found[0] == config.rootpath and found[1] == config.inipath
    except Exception:  # noqa: BLE001 - another pytest: take the slow path
        return False


def main():
    # Let the plugin (python/racefree_pytest) find START_MODULES by name, in the children too.
    sys.modules.setdefault("racefree_forkserver", sys.modules[__name__])
    fd = int(os.environ.pop(_FD_ENV))
    os.set_inheritable(fd, False)
    sock = socket.socket(fileno=fd)
    conn = _Conn(sock)
    # First word: pytest imported (racefree looks for it without importing it, and asks
    # a fresh interpreter why only if no server gets this far).
    conn.send({"pytest": pytest.__version__})
    started = time.monotonic()
    base_sockets = _sockets(fd)
    _SOCKET_BASELINE[:] = [fd, base_sockets]
    count, problem, module = _warm_up(fd, base_sockets)
    if problem:
        conn.send({"ready": False, "reason": problem, "module": module})
        return
    server_argv = json.loads(os.environ.pop(_ARGV_ENV))
    anchors = json.loads(os.environ.pop(_ANCHORS_ENV, "[]"))
    global _COPY_AHEAD
    _COPY_AHEAD = os.environ.pop(_COPY_AHEAD_ENV, "1") != "0"

    def ready(**point):
        why = _unsafe(fd, base_sockets)
        if why:
            conn.send({"ready": False, "reason": "configuring pytest: %s" % why, "module": None})
            os._exit(0)
        # Every unit's sys.modules["__main__"] (see _prepare_child): imported once here.
        import pytest.__main__  # noqa: F401

        if sys.platform.startswith("linux"):
            # Every child calls into libc (its parent-death signal, its namespaces): load
            # ctypes once here, not in each child (some milliseconds per unit otherwise).
            unitns._libc()
        # Everything imported so far lives as long as the server: move it out of the
        # collector's sight, so a child's collections do not walk (and copy-on-write) it.
        gc.collect()
        gc.freeze()
        message = {"ready": True, "modules": count, "secs": time.monotonic() - started}
        message.update({k: v for k, v in point.items() if v is not None})
        conn.send(message)

    try_session_point = os.environ.pop(_POINT_ENV, "session") != "conftest"
    point = _ForkPoint(conn, server_argv, anchors, ready, try_session_point)
    code = _pytest_main(server_argv + anchors, plugins=[point])
    if point.in_child:
        _exit(code)
    if point.verdict is not None:
        # The session-point server: pytest ended before the session started (a conftest
        # file failed to import, say). The conftest-point server serves instead.
        _tell(point.verdict, "pytest stopped (exit status %d) before the session started" % code)
        os._exit(0)
    # pytest ended before it would load conftest files (a usage error, say): spawned
    # processes will show the user why.
    conn.send(
        {
            "ready": False,
            "reason": "pytest stopped (exit status %d) before loading conftest files" % code,
            "module": None,
        }
    )


if __name__ == "__main__":
    main()
