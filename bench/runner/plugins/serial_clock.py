"""A pytest plugin for bench.py's serial pytest run (``-p serial_clock``): each test's time
from ``pytest_runtest_logstart`` to ``pytest_runtest_logfinish``, the span racefree's own
plugin reports for a test, so that the bound's "serial test time" is measured in the serial
run with the instrument racefree's numbers use. JUnit's times are not that: they add up the
setup, call and teardown phases only, and leave out pytest's per-test work around them,
which on a suite of tiny tests (packaging) is most of the time.

A test run more than once (pytest-rerunfailures) counts every attempt, as bench.py counts
racefree's (its ``test_retry`` events carry the failed attempts' times).

Written as JSON ({nodeid: seconds}) to the file named by RACEFREE_BENCH_SERIAL_TIMES when
the session ends. The clock is held inside an object: a test that fakes ``time`` (freezegun
replaces module attributes that point at the real functions) cannot reach it.
"""

import json
import os
import time
import types

_CLOCK = types.SimpleNamespace(now=time.perf_counter)
_started = {}
_times = {}


def pytest_runtest_logstart(nodeid, location):
    _started[nodeid] = _CLOCK.now()


def pytest_runtest_logfinish(nodeid, location):
    start = _started.pop(nodeid, None)
    if start is not None:
        _times[nodeid] = _times.get(nodeid, 0.0) + _CLOCK.now() - start


def pytest_sessionfinish(session):
    path = os.environ.get("RACEFREE_BENCH_SERIAL_TIMES")
    if path:
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(_times, handle)
