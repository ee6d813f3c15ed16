"""Shared test setup: CPU, float32 by default, one persistent XLA cache per session so that
identical programs built in different tests (or by CLI subprocesses) compile once."""

from __future__ import annotations

import os
import sys
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Four CPU "devices" (sharing the same cores) for the multi-device tests: a run still uses
# one device unless it asks for more (--devices).
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + " --xla_force_host_platform_device_count=4").strip()
# MuJoCo reads MUJOCO_GL once, at its first import: the video tests render for real with
# OSMesa (apt-get install libosmesa6) unless the caller chose a backend.
os.environ.setdefault("MUJOCO_GL", "osmesa")
_CACHE = os.environ.setdefault(
    "PPO_JAX_TEST_CACHE", os.path.join(tempfile.gettempdir(), "ppo_jax_test_xla_cache")
)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import jax  # noqa: E402
import pytest  # noqa: E402

from ppo_jax.programs import enable_compile_cache  # noqa: E402

enable_compile_cache(_CACHE)


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


TINY_TRAIN = ("--total-frames 600 --frames-per-batch 200 --num-envs 4 --minibatch-size 40 "
              "--num-epochs 2 --hidden-sizes 16 16 --eval-every 2 --eval-max-steps 50 "
              "--init-stats-frames 100").split()


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> str:
    """Run directory of a tiny training run (3 batches of 200 frames, 16x16 networks), made
    by ``scripts/train.py`` with the session's compilation cache."""
    from ppo_jax.commands import train

    out = str(tmp_path_factory.mktemp("tiny_run") / "run")
    # in-process (the programs are shared with other tests); with the policy video
    assert train.main([*TINY_TRAIN, "--out", out, "--compile-cache-dir", _CACHE,
                       "--no-progress"]) == 0
    return out
