"""Shared test setup: CPU, float32 by default, one persistent XLA cache per session so that
identical programs built in different tests (or by CLI subprocesses) compile once."""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Four CPU "devices" (sharing the same cores) for the multi-device tests: a run still uses
# one device unless it asks for more (--devices).
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + " --xla_force_host_platform_device_count=4").strip()
# MuJoCo reads MUJOCO_GL once, at its first import: the backend is picked as the commands
# pick it (OSMesa, else EGL, unless MUJOCO_GL is set); the render tests skip where none works.
from ppo_jax.eval.gl import default_offscreen_backend  # noqa: E402

default_offscreen_backend()
_CACHE = os.environ.get("PPO_JAX_TEST_CACHE") or os.path.join(
    tempfile.gettempdir(), "ppo_jax_test_xla_cache")
os.environ["PPO_JAX_TEST_CACHE"] = _CACHE
# Every command the tests run without --compile-cache-dir, in-process or in a subprocess,
# uses the session's cache: none writes to the user's ~/.cache.
os.environ["PPO_JAX_COMPILE_CACHE_DIR"] = _CACHE
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import pytest  # noqa: E402

from ppo_jax.run.compile_cache import enable_compile_cache  # noqa: E402
from ppo_jax.config import PPOConfig  # noqa: E402

enable_compile_cache(_CACHE)


# The modules that take longest on 2 CPU cores, longest first (their worker seconds with
# ``--durations`` and PPO_JAX_PROFILE_COMPILES, cold cache and warm, 2026-12-04). Handed out
# first, so that no long module starts last while the other worker has nothing left to do;
# the other modules follow in xdist's own order (most tests first). An order only: no test
# depends on it.
LONGEST_FIRST = ("test_learning.py", "test_cli.py", "test_parallel.py", "test_env_suite.py",
                 "test_gpu_check.py", "test_envs.py", "test_train.py", "test_env.py",
                 "test_interrupt.py", "test_tutorial.py", "test_mujoco_c.py",
                 "test_env_parity.py")


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist, which may not be installed
def pytest_xdist_make_scheduler(config, log):
    """Under pytest-xdist (``-n 2``, as .ci/run), one worker runs a whole test module: its
    module-scoped fixtures and in-process programs are then built once. Processes share the
    compile cache, and the program store's lock makes a worker wait for a set of programs
    that the other is compiling instead of compiling it too. Modules go out longest first
    (:data:`LONGEST_FIRST`), one at a time: a worker gets its next module when it is down to
    the last test of its current one (a worker holds its last test until it knows what
    comes next), so at most that one test runs before a module handed out (xdist's default
    queues a module behind two). The subclass uses xdist's scheduler internals (pinned
    below 4 in pyproject.toml); where they are missing, xdist's own scheduler runs."""
    from xdist.scheduler import LoadFileScheduling

    internals = ("_assign_work_unit", "_reschedule", "_pending_of")
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

        def _reschedule(self, node):
            if (not node.shutting_down and self.workqueue
                    and self._pending_of(self.assigned_work[node]) > 1):
                return
            super()._reschedule(node)

    return LongestFirst(config, log)


@pytest.fixture(scope="session")
def compile_cache_dir() -> str:
    return _CACHE


@pytest.fixture(scope="session")
def root_dir() -> str:
    return ROOT


@pytest.fixture
def x64():
    """Enable float64 for one test and restore the previous setting afterwards."""
    prev = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", prev)


# The tests' config is the "tiny" preset (3 batches of 200 frames from 4 envs, 16x16
# networks): one declaration, in ppo_jax.config.PRESETS, which the CLI also takes.
TINY_FLAGS = ("--preset", "tiny")


@pytest.fixture(scope="session")
def tiny_config() -> PPOConfig:
    return PPOConfig.from_preset("tiny")


@pytest.fixture(scope="session")
def tiny_flags() -> tuple[str, ...]:
    """``scripts/train.py`` flags of :func:`tiny_config`."""
    return TINY_FLAGS


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> str:
    """Run directory of a tiny training run, made by ``scripts/train.py`` with the session's
    compilation cache (in-process: its programs are shared with other tests; with the
    policy video where rendering works)."""
    from ppo_jax.cli import train

    out = str(tmp_path_factory.mktemp("tiny_run") / "run")
    assert train.main([*TINY_FLAGS, "--out", out, "--compile-cache-dir", _CACHE,
                       "--no-progress"]) == 0
    return out


def _rendering_works() -> str | None:
    """None when MuJoCo's offscreen renderer can make a context here, else why not."""
    import mujoco

    try:
        mujoco.Renderer(mujoco.MjModel.from_xml_string("<mujoco/>"), 8, 8).close()
    except Exception as e:  # no backend, or one that cannot make a context
        return f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
    return None


@pytest.fixture(scope="session")
def rendering():
    """Skip the test unless an offscreen GL context can be made (CI installs OSMesa)."""
    why = _rendering_works()
    if why is not None and os.environ.get("CI"):  # CI installs OSMesa: it must render
        pytest.fail(f"CI cannot render: {why}")
    if why is not None:
        pytest.skip(f"no offscreen GL for MuJoCo (MUJOCO_GL={os.environ.get('MUJOCO_GL')}: "
                    f"{why}); {'sudo ' if os.geteuid() else ''}apt-get install libosmesa6 "
                    "and MUJOCO_GL=osmesa")


@pytest.fixture(scope="session")
def jx():
    """ppo_jax's side of the TorchRL parity tests (``tests/parity.py``), compiled once."""
    from tests.parity import JaxSide

    return JaxSide()


# PPO_JAX_PROFILE_COMPILES=FILE: record, per test, the XLA programs it traced, lowered and
# compiled (JAX's own compile events; a persistent-cache hit is timed as its retrieval), and
# write them as JSON to FILE (FILE.gw0, FILE.gw1 under pytest-xdist; merged with what an
# earlier pytest run wrote there) at the end, slowest first (``python -m pytest --durations=0``
# gives the wall times beside it). Programs compiled in CLI subprocesses are not seen.
_PROFILE = os.environ.get("PPO_JAX_PROFILE_COMPILES")
if _PROFILE and os.environ.get("PYTEST_XDIST_WORKER"):  # one file per worker: FILE.gw0, ...
    _PROFILE = f"{_PROFILE}.{os.environ['PYTEST_XDIST_WORKER']}"
if _PROFILE:
    import json
    import time

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

    jax.monitoring.register_event_duration_secs_listener(_on_event)

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(item, nextitem):
        _current[0] = item.nodeid
        t0 = time.monotonic()
        yield
        _record(item.nodeid)["wall_s"] += time.monotonic() - t0

    def pytest_sessionfinish(session, exitstatus):
        timed = ("wall_s", "trace_s", "lower_s", "compile_s")
        got = {k: {**v, **{s: round(v[s], 2) for s in timed}} for k, v in _profile.items()}
        if os.path.exists(_PROFILE):  # an earlier pytest run's
            with open(_PROFILE) as f:
                got = {**json.load(f), **got}
        with open(_PROFILE, "w") as f:
            json.dump(dict(sorted(got.items(), key=lambda kv: -kv[1]["wall_s"])), f, indent=1)
