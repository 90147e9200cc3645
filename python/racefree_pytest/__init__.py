"""racefree's pytest plugin: streams what happens in one pytest process to racefree.

racefree embeds this file in its binary, writes it into the run's private session directory,
puts that directory on PYTHONPATH and loads it with ``-p racefree_pytest``. It is inert when
``RACEFREE_EVENT_FD`` is not set, so importing it by hand does nothing.

Protocol: one JSON object per line, written to the inherited pipe whose file descriptor number
is in ``RACEFREE_EVENT_FD``. The key ``e`` names the message. racefree measures durations
itself from the arrival of these messages, so none are sent from here: suites that mock
``time`` make pytest's own figures absurd.

Messages (all fields are strings unless noted):
  hello        pid (int), pytest (version)
  collected    ids (list of node ids, in run order), deselected (int)
  collect      id, outcome ("failed" | "skipped"), longrepr, message
  start        id, timeout (number, present when a ``timeout`` marker sets the test's limit)
  report       id, when ("setup" | "call" | "teardown"), outcome ("passed" | "failed" |
               "skipped"), category and word (pytest_report_teststatus's answer: how
               pytest's terminal counts and names it), subtest (bool: a pytest 9 subtest's
               report), longrepr, message, head_line, sections ([[title, text], ...]: on
               failure, and of passing call and teardown reports under -rP/-rX/-rA),
               wasxfail (present only for xfail/xpass), skip_reason; when racefree
               writes JUnit XML (the unit's ``junit``), also what pytest's junitxml would
               take from the report: skip_details (a skip's element text), xml_attributes
               ([[name, value], ...]: the testcase's attributes, present when
               record_xml_attribute was used or junit_family is xunit1), junit_output
               ([[tag, text], ...]: the <system-out>/<system-err> of junit_logging)
  finish       id
  suite_properties  properties ([[name, value], ...]): every record_testsuite_property this
               process recorded so far (sent when it grows; only with ``junit``)
  exit         reason, returncode (int or null), interrupt (bool): pytest.exit() ended the
               session, or (interrupt) a KeyboardInterrupt the process raised itself
  done         exitstatus (int), warnings (int: of tests and files; the warnings pytest
               recorded while configuring itself come as ``warning`` messages with
               ``config``, which racefree counts once for the run), final (int: the status a
               sessionfinish hook set instead, present only when one did)
  warning      location, message, config (bool): one warning, for the warnings summary
  imports      modules (list of names): modules this process imported that a fork server
               could preload (sent before done, only when ``RACEFREE_LEARN_IMPORTS`` is set)
  coverage     source, report, config, append, branch, precision, fail_under,
               no_cov_on_fail: pytest-cov's report options, taken from it at session start
               so that racefree reports once for the run (see _take_coverage_report)
  plugin_summary  text, raised (bool): what other plugins' and conftests'
               pytest_terminal_summary wrote (sent after done; see _OtherSummaries), and
               whether one raised (its traceback ends the text)

racefree enforces per-test timeouts itself, from these messages. The plugin only says which
limit a ``@pytest.mark.timeout(N)`` marker sets (pytest-timeout's marker; registered here so
pytest does not warn when pytest-timeout is absent), sets ``RACEFREE_TEST`` to the running
test's id (processes a test starts inherit it, so racefree can name the test that leaked
them) and points faulthandler at the file named by ``RACEFREE_FAULT_FILE`` (for fatal
signals and for SIGTERM, which is how racefree stops a test whose time is up), so the
traceback of a crashed or timed-out test reaches its report.

The unit's description comes from the JSON file named by ``RACEFREE_UNIT_FILE``:
  select   a per-file node-id selection (to resume part of a unit, or node ids given on the
           command line): ``{"path/to/test_x.py": ["path/to/test_x.py::test_a[odd id]"]}``.
           Items of files listed there run only if their id equals a listed id or extends it
           with ``::`` or ``[``; files not listed run whole. Ids travel in JSON, so any
           character works.
  exclude  the same shape and matching rule, the other way round: items of a listed file
           that match a listed id do not run. racefree splits a file too long for one
           process into chunks: all but the last select ids, the last excludes them, so a
           test new since racefree's history still runs, exactly once.
           Both apply before any other plugin deselects (``-k``, ``-m``), and what they drop
           is dropped silently, not counted as deselected: it is another process's to run.
  walked   ``{"/abs/tests/test_x.py": "/abs/tests"}``: files racefree found by walking a
           directory (the value), as opposed to files named on the command line. pytest
           would apply ``collect_ignore`` and ``pytest_ignore_collect`` to them, but racefree
           passes them as arguments, which pytest never ignores; so the plugin asks the
           ignore hook itself, for the file and each directory below the walk root.
  skip     absolute paths this unit must not collect: in a unit given directories for
           pytest to walk itself (for what a conftest's or plugin's collector finds and
           racefree's discovery cannot), every file racefree runs in other units.
  junit    true when racefree writes JUnit XML: the plugin then sends what pytest's own
           junitxml would have written (see _Junit).
"""

import faulthandler
import fnmatch
import io
import json
import os
import signal
import sys
import time
import types
from pathlib import Path as _Path

import pytest

_EVENT_FD_ENV = "RACEFREE_EVENT_FD"
_UNIT_FILE_ENV = "RACEFREE_UNIT_FILE"
_LEARN_ENV = "RACEFREE_LEARN_IMPORTS"

# What was imported, and where imports came from, before pytest loaded any plugin, conftest
# or test module: the baseline for learning the fork server's preload set. In a child of the
# fork server, the server's own start is the baseline (it preloaded the rest).
_BASELINE_MODULES = getattr(
    sys.modules.get("racefree_forkserver"), "START_MODULES", None
) or frozenset(sys.modules)
_BASELINE_PATH = tuple(os.path.abspath(p or os.curdir) for p in sys.path)

_FAULT_FILE_ENV = "RACEFREE_FAULT_FILE"
_SUITE_RERUNS_ENV = "RACEFREE_SUITE_RERUNS_FILE"
_TEST_ENV = "RACEFREE_TEST"


def _marker_timeout(item):
    marker = item.get_closest_marker("timeout")
    if marker is None:
        return None
    value = marker.args[0] if marker.args else marker.kwargs.get("timeout")
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


# One encoder for every message (json.dumps with options builds a new one per call: a few
# microseconds of every test's messages). Not ASCII-only: a node id may hold a lone surrogate
# (an undecodable file name), which as an escape racefree's JSON parser would reject; raw, the
# UTF-8 encoding in _Channel.flush replaces it.
_encode = json.JSONEncoder(ensure_ascii=False).encode

# The clock of tests' durations, held where tools that fake time cannot reach it: freezegun,
# while time is frozen, replaces ``time.monotonic`` and every module attribute that refers
# to it, but not one inside an object.
_CLOCK = types.SimpleNamespace(now=time.monotonic)


class _Channel:
    """Writes whole lines to racefree's pipe; blocking writes are fine because racefree
    drains the pipe continuously from its own thread."""

    def __init__(self, fd):
        self.fd = fd
        self.pending = []
        # Children of tests (subprocess with close_fds=False, multiprocessing) must not
        # inherit racefree's pipe: a leftover writer would keep the pipe open after the
        # unit ends.
        try:
            os.set_inheritable(fd, False)
        except OSError:
            pass

    def send(self, kind, **fields):
        """Writes this message, after any queued ones, now."""
        self.queue(kind, **fields)
        self.flush()

    def queue(self, kind, **fields):
        """Holds this message until the next ``send`` or ``flush``: one write per test
        instead of one per message, since every write wakes racefree."""
        fields["e"] = kind
        self.pending.append(_encode(fields))

    def send_encoded(self, kind, field, encoded):
        """Sends a message whose one field is already JSON."""
        self.pending.append('{"e": %s, %s: %s}' % (json.dumps(kind), json.dumps(field), encoded))
        self.flush()

    def flush(self):
        if not self.pending:
            return
        data = ("\n".join(self.pending) + "\n").encode("utf-8", "replace")
        self.pending = []
        view = memoryview(data)
        while view:
            try:
                written = os.write(self.fd, view)
            except InterruptedError:
                continue
            except OSError:
                # racefree went away (it kills units it cancels); nothing more to say.
                return
            view = view[written:]


class _Asleep:
    """The channel of a plugin registered in a fork server, before a unit wakes it: there
    is nobody to tell yet."""

    def send(self, kind, **fields):
        pass

    def queue(self, kind, **fields):
        pass

    def send_encoded(self, kind, field, encoded):
        pass

    def flush(self):
        pass


# The plugin of the latest pytest configuration in this process (a fork server's child that
# configures pytest afresh has two): the one whose unit the directory listings serve.
_LATEST = [None]


def _list_wanted_entries_only(plugin):
    """pytest's directory collectors list every entry of each directory on the way to the
    unit's files and ask the ignore hook about each, which ``pytest_ignore_collect`` answers
    first for entries the unit does not want: still some 40 microseconds an entry, or 40 ms
    per unit in a directory of a thousand files. Their listing leaves those entries out
    instead, with the same result. (If a pytest lacks the listing function, nothing
    changes.)"""
    _LATEST[0] = plugin
    for module_name in ("_pytest.main", "_pytest.python"):
        module = sys.modules.get(module_name)
        listing = getattr(module, "scandir", None)
        if listing is None or getattr(listing, "racefree_filtered", False):
            continue

        def scandir(path, *args, _listing=listing, **kwargs):
            entries = _listing(path, *args, **kwargs)
            latest = _LATEST[0]
            if latest is None or (latest.wanted is None and not latest.skip):
                return entries
            return [
                entry
                for entry in entries
                if entry.path not in latest.skip
                and (latest.wanted is None or latest.wanted_path(entry.path))
            ]

        scandir.racefree_filtered = True
        module.scandir = scandir


def _text(value):
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return str(value)


def _crash_message(report):
    longrepr = getattr(report, "longrepr", None)
    crash = getattr(longrepr, "reprcrash", None)
    if crash is not None:
        return _text(getattr(crash, "message", ""))
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return _text(longrepr[2])
    if isinstance(longrepr, str):
        # pytest.fail(pytrace=False), strict xpass: the text is the message.
        return longrepr
    return ""


def _skip_where(report):
    """Where a skip happened, as pytest's folded "SKIPPED [N] path:line: reason" summary lines
    name it: the path relative to where pytest was started, and the line, which pytest leaves
    out for a test skipped by its own ``skip`` marker (not a module's ``pytestmark``)."""
    longrepr = getattr(report, "longrepr", None)
    if not (isinstance(longrepr, tuple) and len(longrepr) == 3):
        return None
    path, lineno = str(longrepr[0]), longrepr[1]
    try:
        path = os.path.relpath(path)
    except ValueError:
        pass
    keywords = getattr(report, "keywords", {}) or {}
    if getattr(report, "when", None) == "setup" and "skip" in keywords and "pytestmark" not in keywords:
        lineno = None
    return [path, lineno]


def _skip_reason(report):
    longrepr = getattr(report, "longrepr", None)
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        reason = _text(longrepr[2])
        if reason.startswith("Skipped: "):
            reason = reason[len("Skipped: "):]
        return reason
    return ""


# The outcome pytest-rerunfailures gives a failed attempt it runs again (racefree keeps it
# as a failed attempt of the test).
_RERUN = "rerun"


def _quiet_phase(report):
    """A setup or teardown that passed, not of an expected failure."""
    return report.when != "call" and report.passed and not hasattr(report, "wasxfail")


def _decisive(report):
    """True if racefree derives the test's outcome from this report (events.rs,
    ``derive_outcome``): a call that passed, failed or skipped, or any phase that failed,
    skipped or is to be run again."""
    if report.when == "call":
        return report.outcome in ("passed", "failed", "skipped", _RERUN)
    return report.outcome in ("failed", "skipped", _RERUN)


def _crash_line(report):
    """The failure's one line under ``--tb=line``, as pytest's terminal reporter takes it
    (``_getcrashline``): ``path:line: message``."""
    longrepr = getattr(report, "longrepr", None)
    try:
        return _text(str(longrepr.reprcrash))
    except AttributeError:
        return _text(str(longrepr)[:50]) if longrepr is not None else ""


def _terminal_text(report):
    """The report's text as pytest's terminal shows it: ``longreprtext`` is the same text
    stripped, and a traceback's first source line loses its indentation and the blank line
    before it (racefree's JUnit strips it, as pytest's ``str(longrepr)`` does)."""
    try:
        from _pytest._io import TerminalWriter

        out = io.StringIO()
        writer = TerminalWriter(out)
        writer.hasmarkup = False
        report.toterminal(writer)
        return _text(out.getvalue().rstrip())
    except Exception:  # noqa: BLE001 - another pytest: its own text, stripped
        return _text(getattr(report, "longreprtext", ""))


def _report_fields(report, subtest, category, word):
    """The message racefree reads a phase report from."""
    fields = {
        "id": report.nodeid,
        "when": report.when,
        "outcome": report.outcome,
        "category": category,
        "word": _text(word),
        "subtest": subtest,
        "longrepr": "",
        "message": "",
        "head_line": _text(getattr(report, "head_line", "") or ""),
        "sections": [],
    }
    if hasattr(report, "wasxfail"):
        fields["wasxfail"] = _text(report.wasxfail)
    properties = getattr(report, "user_properties", None)
    if properties:
        # record_property's (name, value) pairs, as pytest's JUnit writes them: as text.
        fields["properties"] = [[_text(name), _text(value)] for name, value in properties]
    if report.failed or report.outcome == _RERUN:
        fields["longrepr"] = _terminal_text(report)
        fields["message"] = _crash_message(report)
        # Captured output is only worth its bytes when it will be shown: on failure.
        fields["sections"] = [[_text(t), _text(c)] for (t, c) in report.sections]
    elif report.skipped:
        fields["skip_reason"] = _skip_reason(report)
        where = _skip_where(report)
        if where is not None:
            fields["skip_where"] = where
        if not subtest:
            fields["longrepr"] = _terminal_text(report)
    return fields


def _selecting_ids(nodeid):
    """``nodeid`` and each of its prefixes that ends where ``::`` or ``[`` begins (its
    module, class, parametrized function): the ids that select it as pytest's node-id
    arguments do."""
    yield nodeid
    start = 0
    while True:
        cuts = [i for i in (nodeid.find("::", start), nodeid.find("[", start)) if i > 0]
        if not cuts:
            return
        cut = min(cuts)
        yield nodeid[:cut]
        start = cut + 1


def _matches(nodeid, wanted):
    """True if an id in the set ``wanted`` selects ``nodeid``. Looks up each prefix of the
    id rather than scanning the set: a chunk of a split file may list tens of thousands."""
    return any(id in wanted for id in _selecting_ids(nodeid))


def _selectors(nodeid, wanted):
    """The ids in ``wanted`` that select ``nodeid``."""
    return [id for id in _selecting_ids(nodeid) if id in wanted]


def _fixtures_module():
    """xdist's ``worker_id`` and ``testrun_uid`` fixtures, with xdist's meaning, in a module
    of their own.

    Registered at configure time, after entry-point plugins, so that these win over
    pytest-xdist's own (which would answer "master" in a process xdist did not start)."""
    module = types.ModuleType("racefree_pytest_fixtures")

    @pytest.fixture(scope="session")
    def worker_id():
        return os.environ.get("PYTEST_XDIST_WORKER", "master")

    @pytest.fixture(scope="session")
    def testrun_uid():
        return os.environ.get("PYTEST_XDIST_TESTRUNUID", "")

    module.worker_id = worker_id
    module.testrun_uid = testrun_uid
    return module


class _IgnoredFile(pytest.File):
    """Stands for a file pytest would have ignored (collect_ignore): collects nothing."""

    def collect(self):
        return []


def _ini(config, name, default):
    """An ini option of pytest's, or ``default`` if this pytest has no such option."""
    try:
        return config.getini(name)
    except (ValueError, KeyError):
        return default


class _Junit:
    """What pytest's own ``--junitxml`` would write from this process, for the report racefree
    writes in its place (units run without ``--junitxml``): each report's captured output
    under ``junit_logging``, a skip's text, the testcase's attributes, the testsuite's
    properties. pytest's own code decides wherever it can."""

    def __init__(self, config):
        self.logging = _ini(config, "junit_logging", "no")
        self.log_passing = _ini(config, "junit_log_passing_tests", True)
        self.xml = self._stand_in(config)
        self.suite_sent = 0

    def _stand_in(self, config):
        """pytest's ``record_xml_attribute`` and ``record_testsuite_property`` fixtures record
        into the LogXML that ``--junitxml`` keeps in the config's stash, and do nothing (or
        nothing visible) without one. So one of pytest's own goes there: the fixtures then
        record, check and escape as they do under ``--junitxml``, and warn as they do there.
        It is never registered as a plugin, so it writes no file (see pytest_unconfigure)."""
        try:
            from _pytest.junitxml import LogXML, xml_key

            if xml_key in config.stash:
                return config.stash[xml_key]
            xml = LogXML(
                os.devnull,
                None,
                _ini(config, "junit_suite_name", "pytest"),
                self.logging,
                _ini(config, "junit_duration_report", "total"),
                _ini(config, "junit_family", "xunit2"),
                self.log_passing,
            )
        except Exception:  # noqa: BLE001 - a pytest without these: the fixtures stay no-ops
            return None
        config.stash[xml_key] = xml
        self.key = xml_key
        return xml

    def forget(self, config):
        """Takes the stand-in out of the stash before pytest's junitxml unconfigures, which
        would unregister it as a plugin (and fail: it never was one)."""
        key = getattr(self, "key", None)
        if key is not None and config.stash.get(key, None) is self.xml:
            del config.stash[key]

    def fields(self, report, fields, output):
        """Adds to a report's message what pytest's junitxml takes from the report."""
        if report.skipped and not hasattr(report, "wasxfail"):
            longrepr = report.longrepr
            if isinstance(longrepr, tuple) and len(longrepr) == 3:
                # pytest's append_skipped: the skip's element text.
                filename, lineno, reason = longrepr
                reason = _text(reason)
                if reason.startswith("Skipped: "):
                    reason = reason[len("Skipped: "):]
                fields["skip_details"] = self.escape("%s:%s: %s" % (filename, lineno, reason))
        attributes = self._attributes(report)
        if attributes:
            fields["xml_attributes"] = attributes
        if output:
            fields["junit_output"] = output

    def escape(self, text):
        try:
            from _pytest.junitxml import bin_xml_escape
        except ImportError:
            return text
        return bin_xml_escape(text)

    def _attributes(self, report):
        """The testcase's attributes as pytest's junitxml sets them from this report, with
        what ``record_xml_attribute`` recorded (pytest keeps only ``classname`` and ``name`` of
        those under xunit2, and adds ``file`` and ``line`` under xunit1). Only when they may
        differ from racefree's own ``classname`` and ``name``."""
        xml = self.xml
        if xml is None or (not xml.node_reporters_ordered and xml.family == "xunit2"):
            return None
        try:
            reporter = xml.node_reporter(report)
            reporter.record_testreport(report)
        except Exception:  # noqa: BLE001 - another pytest's internals: racefree's own names
            return None
        return [[_text(name), _text(value)] for name, value in reporter.attrs.items()]

    def output(self, report):
        """The ``<system-out>`` and ``<system-err>`` pytest's junitxml appends for this report
        under ``junit_logging`` and ``junit_log_passing_tests`` (its pytest_runtest_logreport
        and write_captured_output): ``[[tag, text], ...]``."""
        if self.logging == "no":
            return []
        written = (
            report.when == "teardown"
            or (report.skipped and not hasattr(report, "wasxfail"))
            or (report.when == "call" and report.failed and not self.log_passing)
        )
        if not written or (not self.log_passing and report.passed):
            return []

        def content(text, header):
            return "\n".join([header.center(80, "-"), text, ""])

        out = []
        text = ""
        if self.logging in ("log", "all"):
            text = content(report.caplog, " Captured Log ")
        if self.logging in ("system-out", "out-err", "all"):
            out.append(["system-out", text + content(report.capstdout, " Captured Out ")])
            text = ""
        if self.logging in ("system-err", "out-err", "all"):
            out.append(["system-err", text + content(report.capstderr, " Captured Err ")])
            text = ""
        if text:
            out.append(["system-out", text])
        return [[tag, self.escape(value)] for tag, value in out]

    def suite_properties(self):
        """Every ``record_testsuite_property`` of this process, if there are more than when
        last asked; else None."""
        xml = self.xml
        if xml is None or len(xml.global_properties) == self.suite_sent:
            return None
        self.suite_sent = len(xml.global_properties)
        return [[_text(name), _text(value)] for name, value in xml.global_properties]

    def test_done(self):
        """Forgets the finished test's testcase attributes."""
        if self.xml is not None and self.xml.node_reporters_ordered:
            self.xml.node_reporters.clear()
            del self.xml.node_reporters_ordered[:]


class _RacefreePlugin:
    def __init__(self, config, channel, unit):
        self.config = config
        self.deselected = 0
        self.unmatched = []
        self.warnings = 0
        # Warnings pytest records while it configures itself (the configuration's, the
        # initial conftests' at import), as the "warnings summary" shows them: (where,
        # text). Every unit has them; racefree counts and shows each once.
        self.config_warnings = []
        self.timeouts = {}
        self.fault_file = None
        # The current test's passed setup report, not sent yet (see pytest_runtest_logreport),
        # and the node id of the test one of whose reports decided its outcome.
        self.held = None
        self.decided = None
        # When the current test started (_CLOCK): racefree reads messages in batches, so a
        # test's duration is measured here.
        self.started = None
        # Whether pytest's own terminal reporter asks pytest_report_teststatus about every
        # report (None: not looked up yet).
        self.terminal_asks = None
        # Which of pytest's PASSES ("P") and XPASSES ("X") sections show passing tests'
        # captured output, which is then sent (None: not looked up yet); the last test
        # that xpassed (its teardown belongs to XPASSES).
        self.passes_shown = None
        self.xpassed = None
        # The last test whose call failed: its passing teardown's output is shown too.
        self.failed_call = None
        self.wake(channel, unit)
        _list_wanted_entries_only(self)

    def wake(self, channel, unit):
        """Takes the unit this process runs (its arguments must be in ``config.args``)."""
        self.channel = channel
        self.selection = {f: frozenset(ids) for f, ids in (unit.get("select") or {}).items()}
        self.exclusion = {f: frozenset(ids) for f, ids in (unit.get("exclude") or {}).items()}
        self.walked = unit.get("walked") or {}
        self.skip = frozenset(unit.get("skip") or ())
        self.wanted = _wanted_paths(self.config)
        self.junit = _Junit(self.config) if unit.get("junit") else None
        # A test's place in its file's whole collection, when this process runs part of
        # the file (a chunk, a resumption): racefree reports in pytest's order with it.
        self.positions = {}

    @pytest.hookimpl(tryfirst=True)
    def pytest_unconfigure(self, config):
        if self.junit is not None:
            self.junit.forget(config)

    @pytest.hookimpl(tryfirst=True)
    def pytest_ignore_collect(self, collection_path, config):
        """A unit collects its own files only. On the way to them pytest lists every
        directory from the rootdir down and, for each entry, asks every plugin whether to
        ignore it and builds a collector for it, only to keep the ones on the command line:
        per unit, work in proportion to the size of its directory. Entries that are not
        one of the unit's paths, inside one, or on the way to one, are skipped at once."""
        path = str(collection_path)
        if path in self.skip:
            return True
        if self.wanted is None or self.wanted_path(path):
            return None
        return True

    def wanted_path(self, path):
        """True if ``path`` is one of the unit's paths, inside one, or on the way to one."""
        for wanted in self.wanted:
            if path == wanted or wanted.startswith(path + os.sep) or path.startswith(wanted + os.sep):
                return True
        return False

    def pytest_sessionstart(self, session):
        _quiet_reporter(session.config)
        _share_suite_reruns(session.config)
        coverage = _take_coverage_report(session.config)
        if coverage is not None:
            self.channel.send("coverage", **coverage)
        # After every plugin's pytest_configure, so pytest's own faulthandler plugin (which
        # writes to stderr) does not take the handler back.
        path = os.environ.pop(_FAULT_FILE_ENV, None)
        if not path:
            return
        try:
            self.fault_file = open(path, "w", encoding="utf-8")
            faulthandler.enable(file=self.fault_file, all_threads=True)
            if hasattr(faulthandler, "register"):
                faulthandler.register(
                    signal.SIGTERM, file=self.fault_file, all_threads=True, chain=True
                )
        except (OSError, ValueError, RuntimeError):
            pass

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_protocol(self, item, nextitem):
        # Kept for the whole item, not taken at its first logstart: a plugin that runs the
        # test again (pytest-rerunfailures) starts each attempt with a logstart of its own.
        self.timeouts.clear()
        limit = _marker_timeout(item)
        if limit is not None:
            self.timeouts[item.nodeid] = limit

    def _ignored(self, file_path):
        root = self.walked.get(str(file_path))
        if root is None:
            return False
        root = os.path.abspath(root)
        path = os.path.abspath(str(file_path))
        hook = self.config.hook
        while path != root and path.startswith(root + os.sep):
            if hook.pytest_ignore_collect(collection_path=_Path(path), config=self.config):
                return True
            path = os.path.dirname(path)
        return False

    @pytest.hookimpl(hookwrapper=True)
    def pytest_collect_file(self, file_path, parent):
        outcome = yield
        if self.walked and self._ignored(file_path):
            # An empty collector rather than none: pytest reports an argument that yields no
            # collector as a usage error. Collectors are lazy, so the module is never imported.
            outcome.force_result([_IgnoredFile.from_parent(parent, path=file_path)])

    @pytest.hookimpl(tryfirst=True)
    def pytest_collection_modifyitems(self, session, config, items):
        # First, so that -k/-m (and other plugins) deselect, and count, only this process's
        # share of the file: the other chunks count theirs.
        if not self.selection and not self.exclusion:
            return
        self.positions = {item.nodeid: i for i, item in enumerate(items)}
        kept = []
        # Selected ids that select nothing collected: racefree reports those it was given
        # on its command line as pytest does ("not found", a usage error).
        selecting = set()
        for item in items:
            path = item.nodeid.split("::", 1)[0]
            wanted = self.selection.get(path)
            if wanted is not None:
                selectors = _selectors(item.nodeid, wanted)
                if not selectors:
                    continue
                selecting.update(selectors)
            unwanted = self.exclusion.get(path)
            if unwanted is not None and _matches(item.nodeid, unwanted):
                continue
            kept.append(item)
        # Dropped silently on purpose: these are not deselected by the user, they were
        # already run by an earlier process of the same unit, or are another chunk's.
        items[:] = kept
        self.unmatched = sorted(
            set(id for ids in self.selection.values() for id in ids) - selecting
        )

    def pytest_deselected(self, items):
        self.deselected += len(items)

    def pytest_keyboard_interrupt(self, excinfo):
        # pytest.exit() (from a test, a fixture or a hook) ends pytest's session with its
        # reason and status: racefree ends the run so, not reporting the test as crashed.
        if excinfo.errisinstance(pytest.exit.Exception):
            self.channel.send(
                "exit",
                reason=_text(getattr(excinfo.value, "msg", "") or str(excinfo.value)),
                returncode=getattr(excinfo.value, "returncode", None),
            )
        elif excinfo.type is KeyboardInterrupt:
            # Raised in this process (racefree stops units with signals of its own, and a
            # terminal's Ctrl-C reaches racefree, not units in process groups of their own):
            # pytest's session ends interrupted, and so does the run. Only KeyboardInterrupt
            # itself: pytest ends a session with collection errors by raising
            # Session.Interrupted, a subclass, which is one file's business here.
            self.channel.send("exit", reason="KeyboardInterrupt", returncode=2, interrupt=True)

    def pytest_collectreport(self, report):
        if report.failed or report.skipped:
            fields = {}
            if report.skipped:
                fields["skip_where"] = _skip_where(report)
                if self.junit is not None:
                    # pytest's append_collect_skipped: the report's text, a tuple's repr.
                    fields["skip_details"] = self.junit.escape(str(report.longrepr))
            self.channel.send(
                "collect",
                id=report.nodeid,
                outcome=report.outcome,
                longrepr=_terminal_text(report),
                message=_skip_reason(report) if report.skipped else _crash_message(report),
                **fields,
            )

    @pytest.hookimpl(trylast=True)
    def pytest_collection_finish(self, session):
        fields = {"ids": [item.nodeid for item in session.items], "deselected": self.deselected}
        if self.unmatched:
            fields["unmatched"] = self.unmatched
        self.channel.send("collected", **fields)

    def pytest_runtest_logstart(self, nodeid, location):
        self.started = _CLOCK.now()
        self._release_held()
        self.decided = None
        os.environ[_TEST_ENV] = nodeid
        limit = self.timeouts.get(nodeid)
        if limit is None:
            self.channel.send("start", id=nodeid)
        else:
            self.channel.send("start", id=nodeid, timeout=limit)

    @pytest.hookimpl(trylast=True)
    def pytest_runtest_logreport(self, report):
        subtest = type(report).__name__ == "SubtestReport"
        # What pytest's junitxml writes of this report's captured output: a teardown that
        # has some is not quiet.
        output = self.junit.output(report) if self.junit is not None and not subtest else None
        # pytest's PASSES section shows what a passing teardown printed.
        shown = (
            report.when == "teardown"
            and any("teardown" in title for title, _ in report.sections)
            and self._output_shown(report)
        )
        if not subtest and _quiet_phase(report) and not output and not shown:
            # A passed setup or teardown decides nothing when another phase of the test
            # does (racefree derives the outcome as pytest's terminal does), so it is not
            # sent then: two messages of every passing test's five. The setup is held
            # until it is known whether it is needed.
            if report.when == "setup":
                self._release_held()
                self.held = report
                return
            if self.decided == report.nodeid:
                return
        category, word = "", ""
        if subtest or (report.when == "call" and not self._terminal_asks()):
            # pytest's own category for this report ("subtests passed", "failed", "" for
            # reports it does not count...), exactly as its terminal summary counts it:
            # racefree counts and names subtests by it. The hook may also adjust a call
            # report (a test with failed subtests becomes failed), so it runs before the
            # report is read, unless the terminal reporter (which runs before this trylast
            # hook) has asked already. Every other report's category goes unused: asking
            # for it cost each test some 30 microseconds.
            status = self.config.hook.pytest_report_teststatus(report=report, config=self.config)
            if status:
                category = _text(status[0])
                word = status[2][0] if isinstance(status[2], tuple) else _text(status[2])
        if not subtest and _decisive(report):
            self.decided = report.nodeid
            if self.held is not None and self.held.nodeid == report.nodeid:
                self.held = None
        self._release_held()
        fields = self._fields(report, subtest, category, word, output)
        if report.failed or report.outcome == _RERUN:
            # A failure is news now: if the process dies next, racefree still has it.
            self.channel.send("report", **fields)
        else:
            self.channel.queue("report", **fields)

    def _release_held(self):
        """Queues the held setup report: no phase of its test has decided yet."""
        if self.held is not None:
            self.channel.queue("report", **self._fields(self.held, False, "", "", None))
            self.held = None

    def _fields(self, report, subtest, category, word, output):
        fields = _report_fields(report, subtest, category, word)
        if report.when == "call" and report.failed and not subtest:
            self.failed_call = report.nodeid
        if report.passed and not subtest and self._output_shown(report):
            # pytest's -rP and -rX (and -rA) show what passing tests printed.
            fields["sections"] = [[_text(t), _text(c)] for (t, c) in report.sections]
        if report.failed and getattr(self.config.option, "tbstyle", None) == "line":
            # pytest's --tb=line shows a failure by its crash line, after its output.
            fields["crash_line"] = _crash_line(report)
        if self.junit is not None and not subtest:
            self.junit.fields(report, fields, output)
        return fields

    def _output_shown(self, report):
        """True if pytest's report shows what this passing call or teardown report holds:
        in its PASSES section (`-rP`, `-rA`) for a pass, XPASSES (`-rX`, `-ra`) for an
        xpass, not under `--tb=no`; and a failed test's teardown output in FAILURES."""
        if self.passes_shown is None:
            try:
                from _pytest.terminal import getreportopt

                chars = getreportopt(self.config)
            except (ImportError, AttributeError):
                chars = ""
            if getattr(self.config.option, "tbstyle", None) == "no":
                chars = ""
            self.passes_shown = frozenset(c for c in "PX" if c in chars)
        if report.when == "teardown" and report.nodeid == self.failed_call:
            return True  # FAILURES shows the teardown's output after the failure
        if not self.passes_shown or report.when == "setup":
            return False
        if report.when == "call":
            xpassed = hasattr(report, "wasxfail")
            if xpassed:
                self.xpassed = report.nodeid
            return ("X" if xpassed else "P") in self.passes_shown
        wanted = "X" if self.xpassed == report.nodeid else "P"
        return wanted in self.passes_shown

    def _terminal_asks(self):
        """True if pytest's own terminal reporter is registered (as "terminalreporter"),
        which asks ``pytest_report_teststatus`` about each report before this trylast hook
        runs. A plugin standing in for it under that name (pytest-sugar, say) may not ask
        the hook, and then the hook's adjustments would never be made."""
        if self.terminal_asks is None:
            try:
                from _pytest.terminal import TerminalReporter

                reporter = self.config.pluginmanager.get_plugin("terminalreporter")
                asks = getattr(type(reporter), "pytest_runtest_logreport", None)
                self.terminal_asks = asks is TerminalReporter.pytest_runtest_logreport
            except (ImportError, AttributeError):
                self.terminal_asks = False
        return self.terminal_asks

    def pytest_runtest_logfinish(self, nodeid, location):
        self._release_held()
        started, self.started = self.started, None
        duration = None if started is None else _CLOCK.now() - started
        if self.junit is not None:
            self.junit.test_done()
            self._queue_suite_properties()
        position = self.positions.get(nodeid)
        if position is None:
            self.channel.send("finish", id=nodeid, duration=duration)
        else:
            self.channel.send("finish", id=nodeid, duration=duration, position=position)

    def _queue_suite_properties(self):
        properties = self.junit.suite_properties()
        if properties is not None:
            self.channel.queue("suite_properties", properties=properties)

    def pytest_warning_recorded(self, warning_message, when, nodeid, location):
        self._send_warning(warning_message, when, nodeid)
        if when != "config":
            # A test's, or a file's at its collection: one unit has it.
            self.warnings += 1

    def _send_warning(self, warning_message, when, nodeid):
        """One warning, for racefree's "warnings summary": where, as pytest's terminal names
        it (the test, else the warning's own path and line), and pytest's text for it."""
        try:
            from _pytest.warnings import warning_record_to_str

            message = warning_record_to_str(warning_message)
        except Exception:  # noqa: BLE001 - an old pytest: Python's own format
            import warnings

            message = warnings.formatwarning(
                warning_message.message,
                warning_message.category,
                warning_message.filename,
                warning_message.lineno,
                warning_message.line,
            )
        where = nodeid
        if not where and warning_message.filename:
            try:
                path = os.path.relpath(str(warning_message.filename))
            except ValueError:
                path = str(warning_message.filename)
            where = "%s:%s" % (path, warning_message.lineno)
        if when == "config":
            # Recorded while pytest configures itself: in a forked unit, in the server,
            # before the unit's channel exists. Sent with the unit's end (see below).
            self.config_warnings.append((_text(where), _text(message)))
        else:
            self.channel.send("warning", location=_text(where), message=_text(message))

    @pytest.hookimpl(hookwrapper=True, tryfirst=True)
    def pytest_terminal_summary(self, terminalreporter):
        capture = _OtherSummaries.start(self.config, terminalreporter)
        outcome = yield
        text = capture.stop() if capture is not None else ""
        raised = outcome.excinfo is not None
        if raised:
            # pytest's process dies of it with a traceback, after its session finished.
            import traceback

            text += "".join(traceback.format_exception(*outcome.excinfo))
        if text.strip():
            self.channel.send("plugin_summary", text=_text(text), raised=raised)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session, exitstatus):
        if os.environ.get(_LEARN_ENV):
            try:
                self.channel.send_encoded("imports", "modules", _preloadable_json(self.config))
            except Exception:  # noqa: BLE001 - learning is an optimisation, never a failure
                pass
        for where, message in self.config_warnings:
            self.channel.send("warning", location=where, message=message, config=True)
        if self.junit is not None:
            # Recorded after the last test (a sessionfinish hook's, say).
            self._queue_suite_properties()
        fields = {"exitstatus": int(exitstatus), "warnings": self.warnings}
        # After every other plugin's and conftest's hook: what pytest will exit with.
        final = getattr(session, "exitstatus", exitstatus)
        if int(final) != int(exitstatus):
            fields["final"] = int(final)
        self.channel.send("done", **fields)


# Modules whose terminal summaries racefree makes itself, for the whole run: pytest's own
# sections (failures, warnings, durations, the short summary) and pytest-cov's report.
_OWN_SUMMARIES = frozenset({"_pytest", "pytest_cov", "racefree_pytest"})


class _OtherSummaries:
    """What other plugins' ``pytest_terminal_summary`` (a conftest's, Hypothesis's
    statistics, a benchmark table) write in a unit: to the unit's terminal, which nobody
    reads. While each of them runs, the terminal writer (whoever holds it: plugins keep
    ``config.get_terminal_writer()``) writes into a buffer instead, as do ``print`` and
    ``sys.stderr``; the buffer goes to racefree, which shows it in the run's summary. Only
    plain implementations are wrapped (a hook wrapper's code around the others is not), and
    writes to descriptor 1 itself are not seen."""

    def __init__(self, writer):
        self.writer = writer
        self.buffer = io.StringIO()
        self.wrapped = []

    @classmethod
    def start(cls, config, reporter):
        writer = getattr(reporter, "_tw", None)
        if not hasattr(writer, "_file"):
            return None  # another pytest's writer: the unit's terminal keeps the text
        try:
            impls = config.pluginmanager.hook.pytest_terminal_summary.get_hookimpls()
        except Exception:  # noqa: BLE001 - another pluggy: the unit's terminal keeps them
            return None
        capture = cls(writer)
        # The unit's progress line may still be open: its closing newline is not the
        # plugins' text (pytest's own sections, which racefree writes, would have closed it).
        reporter.currentfspath = None
        for impl in impls:
            module = getattr(impl.function, "__module__", None) or ""
            if impl.hookwrapper or getattr(impl, "wrapper", False):
                continue
            if module.split(".")[0] in _OWN_SUMMARIES:
                continue
            original = impl.function
            try:
                # pluggy calls ``impl.function`` afresh at each call, with the arguments
                # named when the plugin was registered.
                impl.function = capture._kept(original)
            except Exception:  # noqa: BLE001 - a pluggy whose hook implementations are frozen
                continue
            capture.wrapped.append((impl, original))
        return capture

    def stop(self):
        """Puts every implementation back; returns what they wrote."""
        for impl, original in self.wrapped:
            impl.function = original
        return self.buffer.getvalue()

    def _kept(self, function):
        def kept(*args, **kwargs):
            streams = (self.writer._file, sys.stdout, sys.stderr)
            self.writer._file = sys.stdout = sys.stderr = self.buffer
            try:
                return function(*args, **kwargs)
            finally:
                self.writer._file, sys.stdout, sys.stderr = streams

        return kept


def _quiet_reporter(config):
    """With pytest's capturing off (``-s``), racefree passes on what a unit writes as it
    comes, for the user to see what tests print. pytest's own account of the unit (its
    header, progress and summary) is racefree's to give, once for the run: the unit's
    terminal reporter writes nowhere. (Before pytest's own ``pytest_sessionstart``, which is
    ``trylast`` and writes the header.)"""
    if getattr(config.option, "capture", None) not in ("no", "tee-sys"):
        return
    reporter = config.pluginmanager.getplugin("terminalreporter")
    if reporter is None or not hasattr(reporter, "_tw"):
        return
    from _pytest.config import create_terminal_writer

    reporter._tw = create_terminal_writer(config, open(os.devnull, "w", encoding="utf-8"))


class _RunWideSuiteReruns:
    """pytest-rerunfailures' ``--max-suite-reruns N`` caps the reruns of the whole run. Its
    count lives in the process that runs the tests (under pytest-xdist, in the controller,
    which its workers ask over a socket); racefree runs many pytest processes, each with a
    count of its own, which would let every unit rerun N tests. So the count is a number
    in a file of the run's session directory, changed under an exclusive ``flock``: every
    unit of the run takes from the same N. Only the suite-wide methods of the plugin's
    status store are replaced; its per-test counts stay the unit's own."""

    def __init__(self, path, local):
        self.path = path
        # The plugin's own methods (this process's count): used, after one line on stderr,
        # if the file cannot be used, so that a rerun decision never crashes the unit.
        self.local = local
        self.broken = False

    def _change(self, step, method, *args):
        """Applies ``step(count) -> (new count, answer)`` to the shared count atomically,
        or calls the plugin's own ``method`` if the file cannot be used."""
        if not self.broken:
            try:
                return self._change_file(step)
            except OSError as error:
                self.broken = True
                sys.stderr.write(
                    "racefree: --max-suite-reruns counts this process's reruns only: "
                    "%s: %s\n" % (self.path, error)
                )
        return self.local[method](*args)

    def _change_file(self, step):
        import fcntl

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            text = os.pread(fd, 64, 0).strip()
            count = int(text) if text.isdigit() else 0
            new, answer = step(count)
            if new != count:
                data = b"%d\n" % new
                os.pwrite(fd, data, 0)
                os.ftruncate(fd, len(data))
            return answer
        finally:
            os.close(fd)  # and with it the lock

    def try_increment_suite_reruns(self, max_cap):
        step = lambda n: (n + 1, True) if n < max_cap else (n, False)  # noqa: E731
        return self._change(step, "try_increment_suite_reruns", max_cap)

    def increment_suite_reruns(self):
        return self._change(lambda n: (n + 1, n + 1), "increment_suite_reruns")

    def decrement_suite_reruns(self):
        self._change(lambda n: (max(n - 1, 0), None), "decrement_suite_reruns")

    def get_suite_reruns(self):
        return self._change(lambda n: (n, n), "get_suite_reruns")


_SUITE_METHODS = (
    "try_increment_suite_reruns",
    "increment_suite_reruns",
    "decrement_suite_reruns",
    "get_suite_reruns",
)


def _share_suite_reruns(config):
    """With ``--max-suite-reruns``, makes pytest-rerunfailures count the run's reruns, not
    this process's (see _RunWideSuiteReruns)."""
    path = os.environ.get(_SUITE_RERUNS_ENV)
    db = getattr(config, "failures_db", None)
    if not path or db is None or getattr(config.option, "max_suite_reruns", None) is None:
        return
    if not all(callable(getattr(db, name, None)) for name in _SUITE_METHODS):
        return  # a version without a suite-wide cap, or another store: left alone
    if isinstance(getattr(db.try_increment_suite_reruns, "__self__", None), _RunWideSuiteReruns):
        return  # already shared (a fork server's session, carried into its unit)
    shared = _RunWideSuiteReruns(path, {name: getattr(db, name) for name in _SUITE_METHODS})
    for name in _SUITE_METHODS:
        setattr(db, name, getattr(shared, name))


def _importable_name(name, module):
    """True if a fresh server could import ``module`` by ``name`` from the baseline sys.path
    (a helper that a conftest put on sys.path could not be)."""
    path = getattr(module, "__file__", None)
    if not path:
        return True  # built in: cheap, and importable by name
    path = os.path.abspath(path)
    stem = os.path.splitext(path)[0]
    if os.path.basename(stem) == "__init__":
        stem = os.path.dirname(stem)
    else:
        # Extension modules: "name.cpython-311-x86_64-linux-gnu" -> "name".
        stem = os.path.join(os.path.dirname(stem), os.path.basename(stem).split(".")[0])
    relative = name.replace(".", os.sep)
    return any(stem == os.path.join(base, relative) for base in _BASELINE_PATH)


# What a fork server's children start from, set by ``prime_preloadable`` in the server
# (racefree_forkserver calls it where it forks): every module the server holds (name ->
# module object), and the names of those a server may preload, already JSON-encoded. A
# child then judges only the modules it imported itself. Going over the server's modules
# in every child would cost milliseconds, most of it copying the pages their objects live
# on (touching an object writes its reference count).
_PRIMED = {}
_PRIMED_JSON = [""]
_PRIMED_PATTERNS = []


def _file_patterns(config):
    return list(config.getini("python_files")) + ["conftest.py"]


def _rewriter_type():
    try:
        from _pytest.assertion.rewrite import AssertionRewritingHook
    except ImportError:
        return ()
    return AssertionRewritingHook


def _judge(name, module, patterns, rewriter):
    """True if a fork server may import ``module`` ahead of time: never test modules,
    conftest files or anything pytest rewrote (plugins are loaded by the server's own
    warm-up)."""
    if name in _BASELINE_MODULES or module is None or name.startswith("racefree_pytest"):
        return False
    if name in ("__main__", "__mp_main__") or not isinstance(module, types.ModuleType):
        return False
    if isinstance(getattr(module, "__loader__", None), rewriter):
        return False
    path = getattr(module, "__file__", None)
    if path and any(fnmatch.fnmatch(os.path.basename(path), p) for p in patterns):
        return False
    return _importable_name(name, module)


def prime_preloadable(config):
    """Judges every module imported so far, for the units a fork server will fork."""
    patterns = _file_patterns(config)
    rewriter = _rewriter_type()
    _PRIMED.clear()
    keep = []
    for name, module in list(sys.modules.items()):
        _PRIMED[name] = module
        if _judge(name, module, patterns, rewriter):
            keep.append(name)
    _PRIMED_JSON[0] = json.dumps(sorted(keep), ensure_ascii=False)[1:-1]
    _PRIMED_PATTERNS[:] = patterns


def _preloadable_json(config):
    """The JSON list of modules imported since start-up that a fork server may import
    ahead of time."""
    patterns = _file_patterns(config)
    rewriter = _rewriter_type()
    if not _PRIMED or patterns != _PRIMED_PATTERNS:
        names = [n for n, m in list(sys.modules.items()) if _judge(n, m, patterns, rewriter)]
        return json.dumps(sorted(names), ensure_ascii=False)
    # sys.modules keeps insertion order: what this process imported since the fork comes
    # after everything the server held (a module it removed and imported again too).
    new = []
    for name in _imported_since_fork():
        if _judge(name, sys.modules.get(name), patterns, rewriter):
            new.append(name)
    parts = [p for p in (_PRIMED_JSON[0], json.dumps(sorted(new), ensure_ascii=False)[1:-1]) if p]
    return "[" + ",".join(parts) + "]"


def _imported_since_fork():
    """Names in sys.modules after the last one the server held unchanged, newest first."""
    names = []
    for name in reversed(sys.modules):
        if _PRIMED.get(name) is sys.modules.get(name):
            break
        names.append(name)
    return names


def _take_coverage_report(config):
    """pytest-cov measuring in this unit: the options of its report, for racefree to make
    once from every unit's data, or None. The unit still measures (into a data file of its
    own, ``COVERAGE_FILE``, which racefree set), but neither reports nor checks
    ``--cov-fail-under``: each unit would report its own share of the tests, and fail
    where the whole run would pass. pytest-cov reports only when asked for a report or a
    minimum (``CovPlugin._should_report``), so both are taken from it here, before its
    ``pytest_runtestloop`` looks."""
    if not os.environ.get("RACEFREE_COVERAGE"):
        # racefree did not see pytest-cov asked for: it neither set this unit's data file
        # nor will it report, so pytest-cov's own report and minimum are left alone.
        return None
    plugin = config.pluginmanager.get_plugin("_cov")
    options = getattr(plugin, "options", None)
    if plugin is None or options is None or getattr(plugin, "_disabled", False):
        return None
    if getattr(plugin, "cov_controller", None) is None:
        return None
    report = getattr(options, "cov_report", None) or {}
    if not isinstance(report, dict):
        # pytest-cov's default, a list: ["term"].
        report = {kind: None for kind in report}
    fields = {
        "source": getattr(options, "cov_source", None),
        "report": {str(k): (None if v is None else str(v)) for k, v in report.items()},
        "config": getattr(options, "cov_config", True),
        "append": bool(getattr(options, "cov_append", False)),
        "branch": getattr(options, "cov_branch", None),
        "precision": getattr(options, "cov_precision", None),
        "fail_under": getattr(options, "cov_fail_under", None),
        "no_cov_on_fail": bool(getattr(options, "no_cov_on_fail", False)),
    }
    options.cov_report = {}
    options.cov_fail_under = None
    _save_coverage_on_sigterm(plugin)
    return fields


def _save_coverage_on_sigterm(plugin):
    """racefree stops a unit with SIGTERM (a test's timeout, a run that stops): pytest-cov
    saves only at the end of its session, and the coverage of the tests the unit had run
    would be lost. Set before pytest's faulthandler registers for SIGTERM (in
    ``pytest_sessionstart``), so that its traceback still comes first."""
    previous = signal.getsignal(signal.SIGTERM)

    def save_and_end(signum, frame):
        try:
            cov = plugin.cov_controller.cov
            cov.stop()
            cov.save()
        except Exception:  # noqa: BLE001 - the unit is ending either way
            pass
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)

    try:
        signal.signal(signal.SIGTERM, save_and_end)
    except (ValueError, OSError):  # not the main thread
        pass


def _wanted_paths(config):
    """The absolute paths of the unit's arguments (node ids without their ``::`` parts), or
    None to leave collection alone: with ``--pyargs``, or an argument that is no path."""
    if getattr(config.option, "pyargs", False):
        return None
    base = str(config.invocation_params.dir)
    wanted = []
    for arg in config.args:
        path = os.path.abspath(os.path.join(base, str(arg).split("::", 1)[0]))
        if not os.path.exists(path):
            return None
        wanted.append(path.rstrip(os.sep) or os.sep)
    return wanted or None


def _load_unit():
    path = os.environ.pop(_UNIT_FILE_ENV, None)
    if not path:
        return {}
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "timeout(seconds): racefree fails the test after this many seconds (0: no limit)",
    )
    config.pluginmanager.register(_fixtures_module(), "racefree_fixtures")
    channel = _connect()
    if channel is not None:
        config.pluginmanager.register(_RacefreePlugin(config, channel, _load_unit()), _PLUGIN)
    elif "racefree_forkserver" in sys.modules:
        # A fork server: its units may be forked after this (see begin_unit). The plugin is
        # registered now, asleep, so that no unit pays for registering it (pluggy's checks,
        # the fixture manager's scan): some milliseconds each.
        config.pluginmanager.register(_RacefreePlugin(config, _Asleep(), {}), _PLUGIN)


_PLUGIN = "racefree_events"


def _connect():
    """The channel to racefree if this process is a unit (``RACEFREE_EVENT_FD`` set), after
    saying hello on it; else None."""
    fd_text = os.environ.pop(_EVENT_FD_ENV, None)
    if fd_text is None:
        return None
    channel = _Channel(int(fd_text))
    channel.send("hello", pid=os.getpid(), pytest=pytest.__version__)
    return channel


def begin_unit(session):
    """For a fork server that forks its units after the session has started (past
    ``pytest_configure`` and ``pytest_sessionstart``): connects the child to racefree, once
    it has taken its unit's arguments, as ``pytest_configure`` and ``pytest_sessionstart``
    would have in a process of its own."""
    config = session.config
    channel = _connect()
    if channel is None:
        return
    unit = _load_unit()
    plugin = config.pluginmanager.get_plugin(_PLUGIN)
    if plugin is None:
        plugin = _RacefreePlugin(config, channel, unit)
        config.pluginmanager.register(plugin, _PLUGIN)
    else:
        plugin.wake(channel, unit)
    plugin.pytest_sessionstart(session)
