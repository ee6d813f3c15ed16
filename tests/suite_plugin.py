"""The suite's pytest hooks (registered by tests/conftest.py, which imports them).

* Under pytest-xdist, whole modules go to a worker, longest first
  (:func:`pytest_xdist_make_scheduler`).
* When a worker moves to another module, the programs it holds let go where their memory
  mappings pass half of Linux's cap (:func:`pytest_runtest_protocol`).
* ``PPO_JAX_PROFILE_COMPILES=FILE`` records, per test, the XLA programs it traced, lowered
  and compiled (:func:`pytest_runtest_protocol`, :func:`pytest_sessionfinish`).
"""

from __future__ import annotations

import json
import os
import time

import pytest

# The modules that take longest on 2 CPU cores, longest first (their worker seconds with
# ``--durations`` and PPO_JAX_PROFILE_COMPILES, cold cache and warm). Handed out
# first, so that no long module starts last while the other worker has nothing left to do;
# the other modules follow in xdist's own order (most tests first). An order only: no test
# depends on it.
LONGEST_FIRST = ("test_learning.py", "test_cli.py", "test_parallel.py",
                 "test_parity_gymnasium_ports.py", "test_gpu_check.py", "test_env_swap.py",
                 "test_train.py", "test_env_api.py", "test_interrupt.py", "test_tutorial.py",
                 "test_mujoco_c.py", "test_parity_gymnasium_pendulum.py")


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist, which may not be installed
def pytest_xdist_make_scheduler(config, log):
    """Under pytest-xdist (``-n 2``, as .ci/run), one worker runs a whole test module: its
    module-scoped fixtures and in-process programs are then built once. Processes share the
    compile cache, and the program store's lock makes a worker wait for a set of programs
    that the other is compiling instead of compiling it too. Modules go out longest first
    (:data:`LONGEST_FIRST`), one at a time: a worker gets its next module when it is down to
    the last test of its current one (a worker holds its last test until it knows what
    comes next), so at most that one test runs before a module handed out (xdist's default
    queues a module behind two). A worker that crashes (a segmentation fault) fails the test
    it was running; what it had not run yet goes to the others or its replacement, and the
    session ends (xdist's own scheduler waits for ever there). The subclass uses xdist's
    scheduler internals (pinned below 4 in pyproject.toml); where they are missing, xdist's
    own scheduler runs."""
    from xdist.scheduler import LoadFileScheduling

    internals = ("_assign_work_unit", "_reschedule", "_pending_of", "_split_scope",
                 "remove_node")
    if not all(hasattr(LoadFileScheduling, name) for name in internals):
        return LoadFileScheduling(config, log)

    def rank(scope: str) -> int:
        name = os.path.basename(scope)
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    class LongestFirst(LoadFileScheduling):
        def _assign_work_unit(self, node):
            # the first of the longest left (min keeps xdist's order among equals)
            self.workqueue.move_to_end(min(self.workqueue, key=rank), last=False)
            super()._assign_work_unit(node)

        def remove_node(self, node):
            # xdist (3.8) puts a crashed worker's whole workload back in the queue: its
            # finished modules too, and a worker handed one has nothing to run and never asks
            # for more (the session then waits for ever), and the test that crashed, which
            # would run again (it is already reported as failed). Only what had not run yet
            # goes back.
            workload = self.assigned_work.pop(node)
            pending = [nodeid for unit in workload.values()
                       for nodeid, done in unit.items() if not done]
            if not pending:
                return None
            crashed = pending[0]  # a worker runs its tests in the order they were sent
            workload[self._split_scope(crashed)][crashed] = True
            for scope, unit in workload.items():
                if not all(unit.values()):
                    self.workqueue[scope] = unit
            for other in self.assigned_work:
                self._reschedule(other)
            return crashed

        def _reschedule(self, node):
            if (not node.shutting_down and self.workqueue
                    and self._pending_of(self.assigned_work[node]) > 1):
                return
            super()._reschedule(node)

    return LongestFirst(config, log)


# PPO_JAX_PROFILE_COMPILES=FILE: record, per test, the XLA programs it traced, lowered and
# compiled (JAX's own compile events; a persistent-cache hit is timed as its retrieval), and
# write them as JSON to FILE (FILE.gw0, FILE.gw1 under pytest-xdist; merged with what an
# earlier pytest run wrote there) at the end, slowest first (``python -m pytest --durations=0``
# gives the wall times beside it). Programs compiled in CLI subprocesses are not seen.
_PROFILE = os.environ.get("PPO_JAX_PROFILE_COMPILES")
if _PROFILE and os.environ.get("PYTEST_XDIST_WORKER"):  # one file per worker: FILE.gw0, ...
    _PROFILE = f"{_PROFILE}.{os.environ['PYTEST_XDIST_WORKER']}"
_profile: dict[str, dict] = {}
_current = ["(collection)"]


def _record(nodeid: str) -> dict:
    return _profile.setdefault(nodeid, {"wall_s": 0.0, "trace_s": 0.0, "lower_s": 0.0,
                                        "compile_s": 0.0, "compiled": []})


def _on_event(event: str, duration: float, **kw) -> None:
    kind = {"/jax/core/compile/backend_compile_duration": "compile",
            "/jax/core/compile/jaxpr_trace_duration": "trace",
            "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower"}.get(event)
    if kind is None:
        return
    rec = _record(_current[0])
    rec[f"{kind}_s"] += duration
    if kind == "compile" and duration > 0.5:
        rec["compiled"].append([kw.get("fun_name", "?"), round(duration, 1)])


if _PROFILE:
    import jax

    jax.monitoring.register_event_duration_secs_listener(_on_event)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """Each test (its setup, call and teardown; the profile's record of it). After a module's
    last test, its fixtures gone: one worker runs hundreds of tests, and every XLA:CPU program
    it keeps loaded holds memory mappings, which Linux caps (a worker past the cap crashed in
    XLA). ``make_room`` lets go of the ones the package keeps and of JAX's caches where they
    pass half the cap; within a module the package does so itself before it obtains
    programs."""
    _current[0] = item.nodeid
    t0 = time.monotonic()
    yield
    from ppo_jax.run import compile_cache

    if nextitem is None or nextitem.module is not item.module:
        compile_cache.make_room()
    if _PROFILE:
        rec = _record(item.nodeid)
        rec["wall_s"] += time.monotonic() - t0
        maps = compile_cache.memory_maps()  # the worker's, after the test
        rec["maps_after"] = maps and maps[0]


def pytest_sessionfinish(session, exitstatus):
    if not _PROFILE:
        return
    timed = ("wall_s", "trace_s", "lower_s", "compile_s")
    got = {k: {**v, **{s: round(v[s], 2) for s in timed}} for k, v in _profile.items()}
    if os.path.exists(_PROFILE):  # an earlier pytest run's
        with open(_PROFILE) as f:
            got = {**json.load(f), **got}
    with open(_PROFILE, "w") as f:
        json.dump(dict(sorted(got.items(), key=lambda kv: -kv[1]["wall_s"])), f, indent=1)
