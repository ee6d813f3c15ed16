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

import pytest  # noqa: E402

from ppo_jax.run.compile_cache import enable_compile_cache  # noqa: E402
from ppo_jax.config import PPOConfig  # noqa: E402

enable_compile_cache(_CACHE)


# The suite's own pytest hooks (the xdist module order, letting go of programs between
# modules, the compile profile) live in tests/suite_plugin.py; imported here, pytest
# registers them as this conftest's.
from tests.suite_plugin import (  # noqa: E402,F401
    pytest_runtest_protocol,
    pytest_sessionfinish,
    pytest_xdist_make_scheduler,
)


@pytest.fixture(scope="session")
def compile_cache_dir() -> str:
    return _CACHE


@pytest.fixture(scope="session")
def root_dir() -> str:
    return ROOT


@pytest.fixture
def x64():
    """Enable float64 for one test and restore the previous setting afterwards."""
    from tests import helpers

    with helpers.x64():
        yield


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
