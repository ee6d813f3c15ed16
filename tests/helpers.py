"""Helpers the test modules share: the commands run in a subprocess or in-process, and the
one-line-error contract every bad input must keep."""

import contextlib
import os
import subprocess
import sys

import jax
import pytest

from ppo_jax.cli import train as train_cmd
from ppo_jax.cli.common import CLIError


def run(root, script, *args, cache=None, timeout=900, env=None):
    """``scripts/<script>`` in a subprocess."""
    cmd = [sys.executable, os.path.join(root, "scripts", script), *args]
    if cache:
        cmd += ["--compile-cache-dir", cache]
    if cache and script == "train.py":
        cmd += ["--no-progress", "--no-video"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def train(*args, cache):
    """``scripts/train.py`` in-process; returns its exit code (CLIError: its code)."""
    try:
        return train_cmd.main([*args, "--compile-cache-dir", cache, "--no-progress", "--no-video"])
    except CLIError as e:
        return e.code


def one_line_error(capsys, main, *args, code=2, words=""):
    """``main(args)`` in-process stops with what ``cli.run_main`` prints as the process's one
    line: a CLIError, or argparse's exit with its one line on stderr; exit status ``code``."""
    capsys.readouterr()
    try:
        main(list(args))
    except CLIError as e:
        got, line = e.code, str(e)
    except SystemExit as e:
        got, line = e.code, capsys.readouterr().err.strip()
    else:
        pytest.fail(f"no error from {args}")
    assert got == code and "\n" not in line, line
    assert words in line, line


def assert_one_line_error(proc, code=2, words=""):
    assert proc.returncode == code, proc.stderr[-2000:]
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert words in err[0], err[0]


@contextlib.contextmanager
def x64():
    """float64 inside the block (JAX's ``jax_enable_x64``), the previous setting after it."""
    prev = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", prev)
