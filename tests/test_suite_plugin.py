"""The suite's own xdist scheduler (tests/suite_plugin.py), on a small project of its own: a
worker that crashes (a segmentation fault in XLA, say) must end as one failed test, and the
session must go on and end, not wait for ever."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

# Modules of 5, 4, 3 and 2 tests: xdist hands them out in that order, so whichever worker
# runs test_m3.py has finished a module before it, which is what the crash put back.
_MODULES = {
    "test_m1.py": "".join(f"def test_{i}(): pass\n" for i in range(5)),
    "test_m2.py": "import time\n" + "".join(f"def test_{i}(): time.sleep(0.3)\n"
                                            for i in range(4)),
    "test_m3.py": ("import os, signal\n"
                   "def test_before(): pass\n"
                   "def test_crash():\n"
                   "    with open(os.environ['CRASH_RUNS'], 'a') as f:\n"
                   "        f.write('ran\\n')\n"
                   "    os.kill(os.getpid(), signal.SIGSEGV)\n"
                   "def test_after(): pass\n"),
    "test_m4.py": "".join(f"def test_{i}(): pass\n" for i in range(2)),
}


def test_a_crashed_worker_fails_its_one_test_and_the_session_ends(tmp_path, root_dir):
    pytest.importorskip("xdist")
    (tmp_path / "conftest.py").write_text(
        "from tests.suite_plugin import pytest_xdist_make_scheduler  # noqa: F401\n")
    for name, text in _MODULES.items():
        (tmp_path / name).write_text(text)
    runs = tmp_path / "crash_runs.txt"
    env = dict(os.environ, PYTHONPATH=root_dir, CRASH_RUNS=str(runs))
    try:
        p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-n", "2", "-p",
                            "no:cacheprovider", "-rf", str(tmp_path)],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else e.stdout
        pytest.fail(f"the session did not end after a worker crashed:\n{out}")
    assert p.returncode == 1, p.stdout + p.stderr
    summary = p.stdout.strip().splitlines()[-1]
    assert summary.startswith("1 failed, 13 passed"), p.stdout
    assert "worker 'gw" in p.stdout and "crashed while running 'test_m3.py::test_crash'" \
        in p.stdout, p.stdout
    # the crashed test is not run again on the replacement worker (the report's wording and
    # how many times a terminal's width lets it print the reason are pytest's, not counted)
    assert runs.read_text().splitlines() == ["ran"], p.stdout
