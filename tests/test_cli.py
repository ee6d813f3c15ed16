"""scripts/train.py and scripts/evaluate.py end to end: checkpoints round trip, resume
equivalence, evaluation reproducing the logged one, and every bad input as one line + exit."""

import glob
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

TINY = ("--total-frames 600 --frames-per-batch 200 --num-envs 2 --minibatch-size 50 "
        "--num-epochs 2 --hidden-sizes 16 16 --eval-every 2 --eval-max-steps 50 "
        "--init-stats-frames 100").split()


def run(root, script, *args, cache=None):
    cmd = [sys.executable, os.path.join(root, "scripts", script), *args]
    if cache and script == "train.py":
        cmd += ["--compile-cache-dir", cache, "--no-progress"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900)


def assert_one_line_error(proc, code=2, words=""):
    assert proc.returncode == code, proc.stderr[-2000:]
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert words in err[0], err[0]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, root_dir, compile_cache_dir):
    """A: checkpoint every batch. B: one call. C: A's run stopped after batch 1, resumed."""
    base = tmp_path_factory.mktemp("runs")
    a, b, c = (str(base / n) for n in "abc")
    pa = run(root_dir, "train.py", *TINY, "--checkpoint-every", "1", "--out", a, cache=compile_cache_dir)
    assert pa.returncode == 0, pa.stderr[-3000:]
    pb = run(root_dir, "train.py", *TINY, "--out", b, cache=compile_cache_dir)
    assert pb.returncode == 0, pb.stderr[-3000:]
    shutil.copytree(a, c)
    for step in ("2", "3"):  # as if killed after batch 1 was saved
        shutil.rmtree(os.path.join(c, "checkpoints", step))
    pc = run(root_dir, "train.py", "--resume", c, cache=compile_cache_dir)
    assert pc.returncode == 0, pc.stderr[-3000:]
    return {"a": a, "b": b, "c": c}


def restore(path):
    from ppo_jax import checkpoint

    return checkpoint.restore(os.path.join(path, "checkpoints"))


def test_outputs_and_metrics_json(runs):
    m = json.load(open(os.path.join(runs["a"], "metrics.json")))
    for key in ("frames", "reward", "step_count", "lr", "eval_frames", "eval_return", "eval_steps",
                "config", "versions", "device", "compile_seconds", "run_seconds", "frames_per_second"):
        assert key in m, key
    assert m["frames"] == [200, 400, 600] and len(m["reward"]) == 3
    assert m["eval_frames"] == [200, 600]
    assert os.path.getsize(os.path.join(runs["a"], "curves.png")) > 0
    from ppo_jax import checkpoint

    assert checkpoint.steps(os.path.join(runs["a"], "checkpoints")) == [1, 2, 3]


def test_checkpoint_holds_everything(runs):
    trainer, states, meta = restore(runs["a"])
    assert meta["batches_done"] == 3 and meta["frames"] == 600 and meta["num_seeds"] == 1
    assert meta["env_id"] == "InvertedDoublePendulum-v4" and meta["versions"]["jax"]
    assert trainer.config.hidden_sizes == (16, 16)
    assert int(states.batches_done[0]) == 3
    counts = [int(np.asarray(x)[0]) for x in __import__("jax").tree_util.tree_leaves(states.opt_state)
              if np.asarray(x).ndim == 1 and np.issubdtype(np.asarray(x).dtype, np.integer)]
    assert 3 * 2 * 4 in counts  # Adam's update count: batches * epochs * minibatches


def test_resume_equals_uninterrupted_and_segments_equal_one_call(runs):
    import jax

    _, a, _ = restore(runs["a"])
    _, b, _ = restore(runs["b"])
    _, c, _ = restore(runs["c"])
    for x, y, z in zip(jax.tree_util.tree_leaves(a.params), jax.tree_util.tree_leaves(c.params),
                       jax.tree_util.tree_leaves(b.params)):
        np.testing.assert_array_equal(x, y)  # resumed == uninterrupted, bit for bit
        np.testing.assert_allclose(x, z, rtol=1e-4, atol=1e-6)  # segmented vs one program
    ma = json.load(open(os.path.join(runs["a"], "metrics.json")))
    mc = json.load(open(os.path.join(runs["c"], "metrics.json")))
    assert mc["frames"] == ma["frames"] and mc["eval_return"] == ma["eval_return"]


def test_evaluate_reproduces_logged_eval(runs, root_dir):
    p = run(root_dir, "evaluate.py", runs["a"], "--episodes", "3", "--json")
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout)
    for key in ("mean_return", "std_return", "mean_steps", "episodes", "checkpoint_step", "frames"):
        assert key in out
    assert out["episodes"] == 3 and out["checkpoint_step"] == 3 and out["frames"] == 600
    logged = json.load(open(os.path.join(runs["a"], "metrics.json")))["eval_return"][-1]
    np.testing.assert_allclose(out["returns"][0], logged, rtol=1e-4)
    # an earlier step and a table
    p = run(root_dir, "evaluate.py", runs["a"], "--step", "1", "--episodes", "2", "--seed", "3",
            "--stochastic")
    assert p.returncode == 0 and "mean return" in p.stdout


def test_bad_flags_and_configs(root_dir, tmp_path):
    assert_one_line_error(run(root_dir, "train.py", "--no-such-flag"), words="unrecognized")
    assert_one_line_error(run(root_dir, "train.py", "--lr", "fast"), words="invalid float")
    assert_one_line_error(run(root_dir, "train.py", "--minibatch-size", "5000", "--out",
                              str(tmp_path / "x")), words="larger than the batch")
    assert_one_line_error(run(root_dir, "train.py", "--out", "/proc/forbidden"),
                          words="cannot write")
    assert not os.path.exists(tmp_path / "x" / "metrics.json")


def test_resume_with_contradicting_flags(runs, root_dir):
    before = sorted(os.listdir(os.path.join(runs["a"], "checkpoints")))
    assert_one_line_error(run(root_dir, "train.py", "--resume", runs["a"], "--hidden-sizes", "32"),
                          words="contradict")
    assert sorted(os.listdir(os.path.join(runs["a"], "checkpoints"))) == before
    assert_one_line_error(run(root_dir, "train.py", "--resume", "/nonexistent/run"),
                          words="no such checkpoint directory")


def test_evaluate_bad_inputs(runs, root_dir, tmp_path):
    assert_one_line_error(run(root_dir, "evaluate.py", str(tmp_path / "missing")),
                          words="no such checkpoint directory")
    (tmp_path / "empty").mkdir()
    assert_one_line_error(run(root_dir, "evaluate.py", str(tmp_path / "empty")),
                          words="no checkpoint")
    assert_one_line_error(run(root_dir, "evaluate.py", runs["a"], "--step", "9"),
                          words="no checkpoint at step 9")
    assert_one_line_error(run(root_dir, "evaluate.py", runs["a"], "--episodes", "0"))


def _copy_run(runs, tmp_path, name):
    dst = str(tmp_path / name)
    shutil.copytree(runs["a"], dst)
    return dst


def test_corrupt_checkpoint_file(runs, root_dir, tmp_path):
    d = _copy_run(runs, tmp_path, "corrupt")
    files = [f for f in glob.glob(os.path.join(d, "checkpoints", "3", "state", "**", "*"),
                                  recursive=True) if os.path.isfile(f) and os.path.getsize(f) > 64]
    assert files
    for f in files:  # truncate every data file of the latest checkpoint
        with open(f, "r+b") as fh:
            fh.truncate(os.path.getsize(f) // 3)
    assert_one_line_error(run(root_dir, "evaluate.py", d), words="step 3")
    # the previous checkpoint is still restorable
    p = run(root_dir, "evaluate.py", d, "--step", "2", "--episodes", "1", "--json")
    assert p.returncode == 0, p.stderr[-2000:]


def _edit_meta(d, step, change):
    path = [f for f in glob.glob(os.path.join(d, "checkpoints", str(step), "meta", "*"))
            if os.path.isfile(f)][0]
    meta = json.load(open(path))
    change(meta)
    json.dump(meta, open(path, "w"))


def test_checkpoint_that_does_not_fit_its_config(runs, root_dir, tmp_path):
    d = _copy_run(runs, tmp_path, "shape")
    _edit_meta(d, 3, lambda m: m["config"].update(hidden_sizes=[32, 32]))
    assert_one_line_error(run(root_dir, "evaluate.py", d), words="does not fit")
    d2 = _copy_run(runs, tmp_path, "obs")
    _edit_meta(d2, 3, lambda m: m.update(observation_size=12))
    assert_one_line_error(run(root_dir, "evaluate.py", d2), words="observation")
