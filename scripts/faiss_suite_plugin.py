"""pytest plugin of scripts/faiss-suite.py: records, for every test of a run,
its outcome, the first line of its error, and how many requests the process
sent to a faiss-proxy server while the test ran (setup, call and teardown).

Loaded with `-p faiss_suite_plugin` (scripts/ on PYTHONPATH). Results go to
the file named by FPX_SUITE_RESULTS, one JSON object a line, written as each
test ends: a file that times out and is killed keeps the tests it finished.

The request count is faissproxy._lib.requests_sent(), read only when the
package is already imported: a run of real faiss never loads it, and counts 0.
"""
import json
import os
import sys

import pytest

_OUT = os.environ.get("FPX_SUITE_RESULTS")
_state = {}


def _requests_sent():
    lib = sys.modules.get("faissproxy._lib")
    return lib.requests_sent() if lib is not None and hasattr(lib, "requests_sent") else 0


def _first_line(report):
    """The error's own line (e.g. "AttributeError: ... has no attribute 'codes'")."""
    crash = getattr(report.longrepr, "reprcrash", None)
    text = crash.message if crash is not None else str(report.longrepr)
    if crash is None:  # a collection error: its traceback's last "E   " line says what
        marked = [l[1:] for l in text.splitlines() if l.startswith("E ")]
        text = marked[-1] if marked else text
    if isinstance(report.longrepr, tuple) and len(report.longrepr) == 3:
        text = report.longrepr[2]  # a skip: (file, line, reason)
    for line in text.splitlines():
        if line.strip():
            return line.strip()[:300]
    return ""


def _write(record):
    if not _OUT:
        return
    with open(_OUT, "a") as f:
        f.write(json.dumps(record) + "\n")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    _state[item.nodeid] = {"nodeid": item.nodeid, "outcome": "passed", "error": "",
                           "requests": 0}
    _write({"nodeid": item.nodeid, "outcome": "started"})  # a crash or timeout leaves this
    before = _requests_sent()
    yield
    rec = _state.pop(item.nodeid)
    rec["requests"] = _requests_sent() - before
    _write(rec)


def pytest_runtest_logreport(report):
    rec = _state.get(report.nodeid)
    if rec is None or rec["outcome"] == "failed":
        return  # the first failure of a test is its reason
    if report.failed:
        rec["outcome"] = "failed"
        rec["error"] = _first_line(report)
    elif report.skipped and rec["outcome"] == "passed":
        xfail = hasattr(report, "wasxfail")
        rec["outcome"] = "xfailed" if xfail else "skipped"
        rec["error"] = report.wasxfail if xfail else _first_line(report)


def pytest_collectreport(report):
    """A file that cannot even be imported (a name the package lacks at import time)."""
    if report.failed:
        _write({"nodeid": report.nodeid, "outcome": "collect_error",
                "error": _first_line(report), "requests": _requests_sent()})
