"""Shared test setup: CPU, float32 by default, one persistent XLA cache per session so that
identical programs built in different tests (or by CLI subprocesses) compile once."""

from __future__ import annotations

import os
import sys
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
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
