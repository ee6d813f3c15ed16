"""Tests that ``--smoke`` injects into the GPU check's pytest step, to show that a failure's
assertion message and a slow test's cap reach the report. They run only when the check sets
``GPU_CHECK_INJECT=1`` (pytest never collects this file otherwise: it is outside ``tests/``),
and are skipped where that variable is unset."""

import os
import time

import pytest

INJECT_VAR = "GPU_CHECK_INJECT"
FAILURE_MESSAGE = "injected failure: the GPU check's report must show this message"
SLOW_S = 600.0  # far past the smoke's cap: the check must stop it

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(os.environ.get(INJECT_VAR) != "1",
                                 reason=f"only with {INJECT_VAR}=1 (the GPU check's --smoke)")]


def test_injected_failure():
    observed = 1
    assert observed == 2, FAILURE_MESSAGE


def test_injected_slow():
    time.sleep(SLOW_S)
