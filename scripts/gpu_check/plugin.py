"""A pytest plugin of the GPU check: every test's outcome, as soon as pytest knows it, as one
JSON line in the file named by ``GPU_CHECK_EVENTS`` (``pytest -p scripts.gpu_check.plugin``;
without that variable the plugin does nothing).

Each line is flushed and synced when written, so a pytest killed in the middle of a test
(a test over its cap, the check's budget spent) leaves every outcome it had. The lines:

* ``{"event": "collected", "nodeids": [...]}``: the tests selected, in run order;
* ``{"event": "collect_error", "nodeid", "message", "longrepr"}``: a module that failed to
  import;
* ``{"event": "start", "nodeid", "t"}``: a test begins (``t``: epoch seconds), which the
  check watches to stop a test past its cap;
* ``{"event": "report", "nodeid", "when", "outcome", "duration", "message", "longrepr",
  "wasxfail"}``: each phase (setup, call, teardown) of a test; ``message``: a failure's
  exception line (the assertion message), a skip's reason; ``longrepr``: a failure's report,
  its last :data:`LONGREPR_CHARS` characters;
* ``{"event": "finish", "nodeid", "t"}``: a test's phases are all reported;
* ``{"event": "session_finish", "exitstatus"}``.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import pytest

EVENTS_VAR = "GPU_CHECK_EVENTS"
MESSAGE_CHARS = 2000
LONGREPR_CHARS = 6000


def trim(text: str, limit: int, tail: bool = False) -> str:
    """``text`` within ``limit`` characters: its head (or its tail), marked where cut."""
    if len(text) <= limit:
        return text
    return ("…" + text[-(limit - 1):]) if tail else (text[:limit - 1] + "…")


def _message(report: Any) -> str | None:
    """A failure's exception line(s) (``AssertionError: ...``), a skip's reason."""
    longrepr = report.longrepr
    if longrepr is None:
        return None
    if isinstance(longrepr, tuple) and len(longrepr) == 3:  # a skip: (path, line, reason)
        return str(longrepr[2])
    crash = getattr(longrepr, "reprcrash", None)
    if crash is not None and getattr(crash, "message", None):
        return trim(str(crash.message), MESSAGE_CHARS)
    text = str(longrepr).strip().splitlines()
    errors = [line[1:].strip() for line in text if line.startswith("E ")]
    return trim("\n".join(errors) if errors else (text[-1] if text else ""), MESSAGE_CHARS)


class EventWriter:
    """Appends one JSON object per line to ``path``, flushed and synced each time."""

    def __init__(self, path: str):
        self.file = open(path, "a", encoding="utf-8")

    def write(self, event: str, **fields: Any) -> None:
        self.file.write(json.dumps(dict(event=event, t=time.time(), **fields),
                                   default=str) + "\n")
        self.file.flush()
        try:
            os.fsync(self.file.fileno())
        except OSError:
            pass

    # -- pytest hooks ------------------------------------------------------------------------
    @pytest.hookimpl(trylast=True)
    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.write("collected", nodeids=[item.nodeid for item in session.items])

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self.write("collect_error", nodeid=report.nodeid, message=_message(report),
                       longrepr=trim(str(report.longrepr), LONGREPR_CHARS, tail=True))

    def pytest_runtest_logstart(self, nodeid: str, location: Any) -> None:
        self.write("start", nodeid=nodeid)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        failed = report.failed
        self.write("report", nodeid=report.nodeid, when=report.when, outcome=report.outcome,
                   duration=round(report.duration, 3),
                   message=_message(report) if (failed or report.skipped) else None,
                   longrepr=(trim(str(report.longrepr), LONGREPR_CHARS, tail=True)
                             if failed else None),
                   wasxfail=getattr(report, "wasxfail", None))

    def pytest_runtest_logfinish(self, nodeid: str, location: Any) -> None:
        self.write("finish", nodeid=nodeid)

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        self.write("session_finish", exitstatus=int(exitstatus))
        self.file.close()


def pytest_configure(config: pytest.Config) -> None:
    path = os.environ.get(EVENTS_VAR)
    if path and not config.pluginmanager.has_plugin("gpu_check_events"):
        config.pluginmanager.register(EventWriter(path), "gpu_check_events")
