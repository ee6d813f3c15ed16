"""``scripts/tutorial.py``, the walkthrough of the TorchRL tutorial, runs top to bottom.

One batch (``PPO_JAX_TUTORIAL_FRAMES=1000``, what CI sets) exercises every section: the env,
its normalization statistics and a 3-step rollout, the policy and value calls, one collected
batch, the minibatch permutation, GAE and the clipped loss before and after one full update
(each checked against TorchRL on the same weights where TorchRL is installed), the training
loop with its evaluation, and the four panels. The script asserts what it prints; any
exception fails the test. It runs in-process with the session's compile cache, so a warm run
loads every program instead of tracing MJX again.
"""

from __future__ import annotations

import importlib.util
import json
import os
import runpy
import subprocess
import sys

import numpy as np
import pytest

FRAMES_ENV = "PPO_JAX_TUTORIAL_FRAMES"


def _script(root_dir: str) -> str:
    return os.path.join(root_dir, "scripts", "tutorial.py")


def _have_torchrl() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("torch", "torchrl", "tensordict"))


def test_tutorial_runs_top_to_bottom(tmp_path, monkeypatch, capsys, root_dir, compile_cache_dir):
    out = tmp_path / "tutorial"
    out.mkdir()  # an earlier walkthrough's files, which it replaces
    (out / "metrics.json").write_text(json.dumps({"written_by": "scripts/tutorial.py"}))
    (out / "curves.png").write_bytes(b"")
    monkeypatch.setenv(FRAMES_ENV, "1000")
    monkeypatch.setattr(sys, "argv", ["tutorial.py", "--out", str(out),
                                      "--compile-cache-dir", compile_cache_dir])
    print_options = np.get_printoptions()
    # the script's own hooks (one-line failures, no dropped Ctrl-C) end with this test
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    monkeypatch.setattr(sys, "unraisablehook", sys.unraisablehook)
    try:
        ns = runpy.run_path(_script(root_dir), run_name="__main__")
    finally:
        np.set_printoptions(**print_options)  # the script sets its own
    printed = capsys.readouterr().out

    config = ns["config"]
    assert config.total_frames == 1000 and config.num_batches == 1
    assert "normalization constant shape: (11,)" in printed
    for line in ("rollout of three steps:", "Running policy:", "Running value:",
                 "Transition, time-major [T, N] = [1000, 1]",
                 "ClipPPOLoss on minibatch 0 after the update:", "after     1000 frames"):
        assert line in printed, line
    assert ns["HAVE_TORCHRL"] == _have_torchrl()
    if _have_torchrl():
        assert "TorchRL's ClipPPOLoss on minibatch 0, with the updated weights:" in printed
    else:
        assert "TorchRL not installed: skipped" in printed

    assert (out / "curves.png").stat().st_size > 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["total_frames"] == 1000 and metrics["failed_batch"] is None
    assert metrics["written_by"] == "scripts/tutorial.py"
    assert len(metrics["eval_return"]) == 1 and np.isfinite(metrics["eval_return"][0])


@pytest.mark.parametrize("argv, env, message", [
    (["--bogus"], {}, "unrecognized arguments: --bogus"),
    (["--total-frames", "1500"], {}, "must be a multiple of frames_per_batch"),
    ([], {FRAMES_ENV: "ten"}, f"{FRAMES_ENV} must be a whole number of frames"),
    (["--out", ""], {}, "the output directory must not be empty"),
])
def test_tutorial_bad_input_is_one_line(root_dir, argv, env, message):
    path = os.pathsep.join(p for p in (root_dir, os.environ.get("PYTHONPATH")) if p)
    r = subprocess.run([sys.executable, _script(root_dir), *argv], capture_output=True,
                       text=True, timeout=120, env={**os.environ, "PYTHONPATH": path, **env})
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tutorial.py: error: "), r.stderr
    assert message in lines[0]
    assert r.stdout == ""
