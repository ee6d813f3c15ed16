"""scripts/train.py and scripts/evaluate.py end to end: checkpoints round trip, resume
equivalence, evaluation replaying the logged one, the compile cache across processes, and
every bad input as one line + exit.

Most runs call the commands' ``main(argv)`` in-process (they share the compiled programs);
a subprocess is used where the exit-code / one-line-stderr contract itself is tested."""

import dataclasses
import gc
import glob
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest

from ppo_jax.cli.common import CLIError
from ppo_jax.cli import evaluate as evaluate_cmd
from ppo_jax.cli import train as train_cmd
from ppo_jax.envs import ENV_ID
from tests.helpers import assert_one_line_error, one_line_error, run, train


@pytest.fixture(scope="module")
def runs(tmp_path_factory, compile_cache_dir, tiny_flags):
    """A: checkpoint every batch. B: one go. C: A's run stopped after batch 1, resumed."""
    base = tmp_path_factory.mktemp("runs")
    a, b, c = (str(base / n) for n in "abc")
    assert train(*tiny_flags, "--checkpoint-every", "1", "--out", a, cache=compile_cache_dir) == 0
    assert train(*tiny_flags, "--out", b, cache=compile_cache_dir) == 0
    shutil.copytree(a, c)
    for step in ("2", "3"):  # as if killed after batch 1 was saved
        shutil.rmtree(os.path.join(c, "checkpoints", step))
    assert train("--resume", c, cache=compile_cache_dir) == 0
    return {"a": a, "b": b, "c": c}


def restore(path):
    from ppo_jax.run import checkpoint

    return checkpoint.restore(path)


def params_of(path):
    import jax

    return jax.tree_util.tree_leaves(restore(path)[1].params)


def test_outputs_and_metrics_json(runs):
    m = json.load(open(os.path.join(runs["a"], "metrics.json")))
    for key in ("frames", "reward", "step_count", "lr", "eval_frames", "eval_return", "eval_steps",
                "config", "versions", "device", "compile_seconds", "compiled_from_cache",
                "compile", "run_seconds", "frames_per_second"):
        assert key in m, key
    assert set(m["compile"]) == {"init", "update", "evaluate"}
    assert m["frames"] == [200, 400, 600] and len(m["reward"]) == 3
    assert m["eval_frames"] == [200, 600]
    assert os.path.getsize(os.path.join(runs["a"], "curves.png")) > 0
    from ppo_jax.run import checkpoint

    assert checkpoint.steps(os.path.join(runs["a"], "checkpoints")) == [1, 2, 3]


def test_checkpoint_holds_everything(runs):
    import jax

    trainer, states, meta = restore(runs["a"])
    assert meta["batches_done"] == 3 and meta["frames"] == 600 and meta["num_seeds"] == 1
    assert meta["batches_done_per_run"] == [3] and meta["frames_per_run"] == [600]
    assert meta["env_id"] == ENV_ID and meta["versions"]["jax"]
    logged = json.load(open(os.path.join(runs["a"], "metrics.json")))["eval_return"][-1]
    assert meta["last_eval_return"] == [logged] and meta["last_eval_frames"] == [600]
    assert trainer.config.hidden_sizes == (16, 16)
    assert int(states.batches_done[0]) == 3
    counts = [int(np.asarray(x)[0]) for x in jax.tree_util.tree_leaves(states.opt_state)
              if np.asarray(x).ndim == 1 and np.issubdtype(np.asarray(x).dtype, np.integer)]
    cfg = trainer.config  # Adam's update count: batches * epochs * minibatches
    assert 3 * cfg.num_epochs * cfg.num_minibatches in counts


def test_restore_run_reads_only_what_evaluation_uses(runs, tmp_path):
    """``restore_run`` (evaluate, export, ``load_policy``) reads the policy's parts of the
    checkpoint: the same values as a whole restore's row, None for the rest, which is not
    read at all (a checkpoint whose envs no longer fit restores for evaluation, not for a
    resume); a checkpoint without a part it needs is one line."""
    import jax

    from ppo_jax.run import checkpoint

    trainer, states, _ = checkpoint.restore(runs["a"])
    _, state, meta = checkpoint.restore_run(runs["a"])
    assert meta["batches_done"] == 3
    for field in checkpoint.POLICY_PARTS:
        whole = jax.tree_util.tree_leaves(getattr(states, field))
        part = jax.tree_util.tree_leaves(getattr(state, field))
        assert len(part) == len(whole) > 0, field
        for x, y in zip(part, whole):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y)[0])
    assert state.env_state is None and state.opt_state is None and state.key is None

    def saved(name, states):
        d = str(tmp_path / name / "checkpoints")
        checkpoint.save(d, trainer, states)
        return d

    wider = jax.tree_util.tree_map(  # envs one wider than the config's
        lambda x: np.concatenate([np.asarray(x), np.asarray(x)[:, :1]], axis=1),
        states.env_state)
    d = saved("wider_envs", states.replace(env_state=wider))
    left = []  # refused before orbax reads: no read cut off whose coroutine prints later
    hook, sys.unraisablehook = sys.unraisablehook, left.append
    try:
        gc.collect()  # what earlier tests left
        left.clear()
        with pytest.raises(checkpoint.CheckpointError, match=r"does not fit its config and env: "
                           r"\.env_state\.\S+ is stored with shape \[1, 5\S*, where they make "
                           r"\[1, 4"):
            checkpoint.restore(d)
        gc.collect()
    finally:
        sys.unraisablehook = hook
    left = [u for u in left if "coroutine" in repr(u.object)]
    assert not left, left[0].exc_value
    _, state2, _ = checkpoint.restore_run(d)
    for x, y in zip(jax.tree_util.tree_leaves(state2.params),
                    jax.tree_util.tree_leaves(state.params)):
        np.testing.assert_array_equal(x, y)
    d = saved("no_eval_key", states.replace(eval_key=None))
    with pytest.raises(checkpoint.CheckpointError, match="holds no .eval_key"):
        checkpoint.restore_run(d)
    with pytest.raises(ValueError, match="include 'params'"):
        checkpoint.restore(runs["a"], parts=("obs_stats",))


def test_resume_equals_uninterrupted_and_checkpointing_changes_nothing(runs):
    for x, y, z in zip(params_of(runs["a"]), params_of(runs["c"]), params_of(runs["b"])):
        np.testing.assert_array_equal(x, y)  # resumed == uninterrupted, bit for bit
        np.testing.assert_array_equal(x, z)  # checkpointing every batch == one go
    ma = json.load(open(os.path.join(runs["a"], "metrics.json")))
    mc = json.load(open(os.path.join(runs["c"], "metrics.json")))
    assert mc["frames"] == ma["frames"] and mc["eval_return"] == ma["eval_return"]
    assert mc["reward"] == ma["reward"]


def test_the_same_command_line_with_resume_continues_the_job(runs, tmp_path, capsys,
                                                              compile_cache_dir):
    """``--preset`` and ``--sweep`` given again with ``--resume`` (the job's own command line,
    ``--resume`` added): taken where they describe the saved job, the run ending as the
    uninterrupted one; where they do not, one line naming each difference."""
    d = str(tmp_path / "again")
    shutil.copytree(runs["a"], d)
    for step in ("2", "3"):
        shutil.rmtree(os.path.join(d, "checkpoints", step))
    assert train("--preset", "tiny", "--checkpoint-every", "1", "--resume", d,
                 cache=compile_cache_dir) == 0
    for x, y in zip(params_of(runs["a"]), params_of(d)):
        np.testing.assert_array_equal(x, y)
    one_line_error(capsys, train_cmd.main, "--resume", d, "--preset", "fast",
                   words="--preset fast sets num_envs 1024 (saved: 4), frames_per_batch")
    one_line_error(capsys, train_cmd.main, "--resume", d, "--preset", "tiny", "--lr", "1e-3",
                   words="--lr 0.001 (saved: 0.0003)")
    one_line_error(capsys, train_cmd.main, "--resume", d, "--sweep", "lr=3e-4",
                   words="--sweep's points lr=0.0003 (saved: base config)")
    for f in glob.glob(os.path.join(d, "checkpoints", "*", "meta", "metadata")):
        meta = json.load(open(f))  # as a one-point sweep of lr=3e-4 saves it
        meta["sweep"] = [{"lr": 3e-4}]
        json.dump(meta, open(f, "w"))
    assert train("--preset", "tiny", "--sweep", "lr=0.0003", "--resume", d,
                 cache=compile_cache_dir) == 0  # finished: nothing to do, and no refusal
    assert "is finished" in capsys.readouterr().out
    one_line_error(capsys, train_cmd.main, "--resume", d, "--sweep", "lr=3e-4,1e-3",
                   words="points lr=0.0003, lr=0.001 (saved: lr=0.0003)")
    one_line_error(capsys, train_cmd.main, "--resume", d, "--sweep", "lr=x",
                   words="--resume: --sweep lr: values must be numbers")


def test_a_resume_may_change_where_evaluations_run(runs, tmp_path, capsys, monkeypatch,
                                                   compile_cache_dir):
    """``--eval-sim`` given with ``--resume`` is taken (it changes no training program: a
    run saved on one kind of machine continues on another), recorded in the next
    checkpoints and metrics.json; the run ends as the uninterrupted one (MJX's episode on
    the host's CPU evaluates as the device's does here). One that cannot run where the
    resume runs, e.g. 'mujoco' over several processes, is one line before compiling."""
    d = str(tmp_path / "moved")
    shutil.copytree(runs["a"], d)
    for step in ("2", "3"):
        shutil.rmtree(os.path.join(d, "checkpoints", step))
    assert train("--resume", d, "--eval-sim", "mjx-cpu", cache=compile_cache_dir) == 0
    for x, y in zip(params_of(runs["a"]), params_of(d)):
        np.testing.assert_array_equal(x, y)
    m, want = (json.load(open(os.path.join(r, "metrics.json"))) for r in (d, runs["a"]))
    assert m["config"]["eval_sim"] == "mjx-cpu" and want["config"]["eval_sim"] == "auto"
    assert m["eval_return"] == want["eval_return"] and m["reward"] == want["reward"]
    assert restore(d)[2]["config"]["eval_sim"] == "mjx-cpu"
    assert m["eval_sim"] == want["eval_sim"] == "mjx:cpu"  # where they ran: MJX, on the CPU
    assert restore(d)[2]["last_eval_sim"] == ["mjx:cpu"]
    shutil.rmtree(os.path.join(d, "checkpoints", "3"))
    import jax

    from ppo_jax.run import host_eval

    class TwoProcesses:  # jax as one of a two-process job's processes sees it
        def __getattr__(self, name):
            return getattr(jax, name)

        process_count = staticmethod(lambda: 2)

    monkeypatch.setattr(host_eval, "jax", TwoProcesses())
    one_line_error(capsys, train_cmd.main, "--resume", d, "--eval-sim", "mujoco",
                   words="--resume: eval_sim 'mujoco' runs in one process")
    assert sorted(os.listdir(os.path.join(d, "checkpoints"))) == ["1", "2"]


def test_running_statistics_are_checkpointed_and_resumed(tmp_path, compile_cache_dir,
                                                       tiny_flags):
    """``--obs-norm running``: the moments travel in the checkpoint; a run stopped after
    batch 1 and resumed ends bit for bit as the uninterrupted one, statistics included, and
    its statistics are those of the init rollouts' and all three batches' observations."""
    import jax

    from ppo_jax.core.normalization import stats_from_moments

    a, c = str(tmp_path / "a"), str(tmp_path / "c")
    assert train(*tiny_flags, "--obs-norm", "running", "--checkpoint-every", "1", "--out", a,
                 cache=compile_cache_dir) == 0
    shutil.copytree(a, c)
    for step in ("2", "3"):
        shutil.rmtree(os.path.join(c, "checkpoints", step))
    assert train("--resume", c, cache=compile_cache_dir) == 0
    (trainer, sa, _), (_, sc, _) = restore(a), restore(c)
    assert trainer.config.obs_norm == "running"
    for x, y in zip(*(jax.tree_util.tree_leaves((s.params, s.obs_stats, s.obs_moments))
                      for s in (sa, sc))):
        np.testing.assert_array_equal(x, y)
    moments = jax.tree_util.tree_map(lambda x: x[0], sa.obs_moments)
    from ppo_jax.run import checkpoint

    after_1 = float(checkpoint.restore(a, step=1)[1].obs_moments.count[0])
    assert float(moments.count) == after_1 + 400  # batches 2 and 3, 200 frames each
    assert after_1 - 200 >= trainer.config.init_stats_frames  # the init rollouts' and batch 1's
    # (1 ulp apart: the program's fusion against eager ops)
    np.testing.assert_allclose(sa.obs_stats.scale[0],
                               stats_from_moments(moments, "running").scale, rtol=1e-6)


def evaluate(capsys, *args, cache):
    """``scripts/evaluate.py`` in-process; returns its stdout (the exit code must be 0)."""
    capsys.readouterr()
    assert evaluate_cmd.main([*args, "--compile-cache-dir", cache]) == 0
    return capsys.readouterr().out


def test_evaluate_replays_logged_eval(runs, capsys, compile_cache_dir):
    # two episodes, deterministic, everywhere in the suite: one evaluation program serves all
    out = json.loads(evaluate(capsys, runs["a"], "--episodes", "2", "--json",
                              cache=compile_cache_dir))
    for key in ("mean_return", "std_return", "mean_steps", "episodes", "checkpoint_step", "frames"):
        assert key in out
    assert out["episodes"] == 2 and out["checkpoint_step"] == 3 and out["frames"] == 600
    assert out["run_index"] == 0 and out["run"] == {"seed": 0}
    logged = json.load(open(os.path.join(runs["a"], "metrics.json")))["eval_return"][-1]
    assert out["replays_logged_eval"] and out["logged_eval_return"] == logged
    np.testing.assert_allclose(out["returns"][0], logged, rtol=1e-4)
    # another step limit than training's evaluations: not their episode
    out = json.loads(evaluate(capsys, runs["a"], "--episodes", "2", "--max-steps", "3",
                              "--sim", "mujoco", "--json", cache=compile_cache_dir))
    assert not out["replays_logged_eval"] and max(out["steps"]) <= 3
    # a longer limit, where the episode ended before training's (50): the same episode
    steps = json.load(open(os.path.join(runs["a"], "metrics.json")))["eval_steps"][-1]
    assert steps + 1 < 50  # (the tiny run's untrained pendulum falls within a few steps)
    out = json.loads(evaluate(capsys, runs["a"], "--episodes", "1", "--max-steps", "1000",
                              "--json", cache=compile_cache_dir))
    assert out["replays_logged_eval"] and out["replayed_in"] == "mjx"
    np.testing.assert_allclose(out["returns"][0], logged, rtol=1e-4)
    # step 2's last batch (1) was not evaluated: nothing to replay, and it says so
    out = json.loads(evaluate(capsys, runs["a"], "--step", "2", "--episodes", "2", "--json",
                              cache=compile_cache_dir))
    assert not out["replays_logged_eval"]
    text = evaluate(capsys, runs["a"], "--step", "2", "--episodes", "2", cache=compile_cache_dir)
    assert "batch 1 has no evaluation logged in training: nothing to replay" in text
    text = evaluate(capsys, runs["a"], "--episodes", "2", "--max-steps", "3", "--sim", "mujoco",
                    cache=compile_cache_dir)
    assert (f"episode 0 starts as training's evaluation after batch 2 (return {logged:.2f}) "
            "but does not replay it: max steps 3 (training's 50)") in text
    # an earlier step, stochastic, as a table
    assert "mean return" in evaluate(capsys, runs["a"], "--step", "1", "--episodes", "2",
                                     "--seed", "3", "--stochastic", cache=compile_cache_dir)


WARM_START_COMPILES = ["convert_element_type"]  # MJX's put_model (see below)


@pytest.mark.gpu
def test_second_process_finds_its_programs_in_the_cache(root_dir, tmp_path, tiny_flags):
    """A fresh cache: the first process compiles and stores, the second loads every program
    (no tracing, no compiling) and trains to the same result. (One-device programs in
    processes that have four devices: each loads onto the device it was compiled for.)"""
    cache = str(tmp_path / "cache")
    first = run(root_dir, "train.py", *tiny_flags, "--out", str(tmp_path / "one"), cache=cache)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "compiling the training programs" in first.stdout
    second = run(root_dir, "train.py", *tiny_flags, "--out", str(tmp_path / "two"), cache=cache,
                 env=dict(os.environ, JAX_LOG_COMPILES="1"))
    assert second.returncode == 0, second.stderr[-3000:]
    assert "loaded the training programs" in second.stdout
    # A warm start compiles nothing the program store could serve: the only XLA program it
    # builds is the one MJX's put_model runs eagerly while the env is built (it strips weak
    # types; JAX's cache answers it). Keys and hyperparameters are made on the host.
    compiled = re.findall(r"Compiling jit\((\w+)\)", second.stderr)
    assert compiled == WARM_START_COMPILES, compiled
    m1 = json.load(open(tmp_path / "one" / "metrics.json"))
    m2 = json.load(open(tmp_path / "two" / "metrics.json"))
    assert m1["compiled_from_cache"] is False
    assert {v["source"] for v in m1["compile"].values()} == {"compiled"}
    assert m2["compiled_from_cache"] is True
    assert {v["source"] for v in m2["compile"].values()} == {"ppo_programs"}
    assert len(glob.glob(os.path.join(cache, "ppo_programs", "*.pkl"))) == 3
    assert glob.glob(os.path.join(cache, "*-cache"))  # JAX's own entries exist too
    # the cold compile's wall time is recorded for the next announcement's estimate
    (record,) = json.load(open(os.path.join(cache, "ppo_jax_compile_times.json"))).values()
    assert 0 < record["seconds"] <= m1["compile_seconds"]
    # the next estimate prefers the same env's training programs
    assert record["family"] == f"{m1['env_id']} training"
    assert f"cached afterwards in {cache}" in first.stdout
    assert m2["reward"] == m1["reward"] and m2["eval_return"] == m1["eval_return"]


def test_nan_from_the_cli(root_dir, tmp_path, compile_cache_dir, tiny_flags, capsys):
    """A learning rate that overflows the parameters: exit 1 with one line naming the batch;
    metrics.json holds every batch up to it, the checkpoint the last good state. Resumed,
    it has nothing to train: it says so in one line, exits 1 as the job did, and leaves
    its files as they are."""
    out = str(tmp_path / "nan")
    p = run(root_dir, "train.py", *tiny_flags, "--lr", "1e38", "--out", out, cache=compile_cache_dir)
    assert_one_line_error(p, code=1, words="NaN/Inf")
    m = json.load(open(os.path.join(out, "metrics.json")))
    bad = m["failed_batch"]
    assert bad is not None and f"batch {bad}" in p.stderr
    assert m["batch"] == list(range(bad + 1))
    assert m["total_frames"] == bad * 200  # the failed batch's update was discarded
    trainer, states, meta = restore(out)
    assert meta["batches_done"] == bad and int(states.batches_done[0]) == bad
    assert int(states.failed_batch[0]) == bad
    assert all(np.isfinite(x).all() for x in params_of(out))
    before = _tree_bytes(out)
    one_line_error(capsys, train_cmd.main, "--resume", out, code=1,
                   words=f"training stopped at NaN/Inf (seed 0 at batch {bad}): nothing to "
                         "train; its files are unchanged")
    assert _tree_bytes(out) == before


def test_existing_run_is_not_overwritten(runs, compile_cache_dir, tiny_flags):
    before = sorted(os.listdir(os.path.join(runs["a"], "checkpoints")))
    with pytest.raises(CLIError, match="already holds a run"):
        train_cmd.main([*tiny_flags, "--out", runs["a"], "--compile-cache-dir", compile_cache_dir])
    assert sorted(os.listdir(os.path.join(runs["a"], "checkpoints"))) == before


def test_a_run_directory_another_process_writes_is_refused(runs, tmp_path, capsys,
                                                           tiny_flags, compile_cache_dir):
    """Two runs into one --out each passed the check for a run there (it holds none until
    its first checkpoint or metrics.json), both trained and wrote over each other's files:
    a run, a resume, ``fit`` and ``resume`` hold their directory while they write, and one
    that finds it held is refused in one line, before anything is read or written."""
    from ppo_jax import fit, resume
    from ppo_jax.config import PPOConfig
    from ppo_jax.run.run_dir import RunDirBusy, held

    busy = "is being written by another process (a run or a resume that is still going)"
    new = str(tmp_path / "new")
    os.makedirs(new)
    d = _copy_run(runs, tmp_path, "stopped")
    before = _tree_bytes(d)
    with held(new), held(d):  # as another process holds them (a lock of another open file)
        one_line_error(capsys, train_cmd.main, *tiny_flags, "--out", new,
                       "--compile-cache-dir", compile_cache_dir, words=f"{new} {busy}")
        one_line_error(capsys, train_cmd.main, "--resume", d, words=f"--resume: {d} {busy}")
        with pytest.raises(RunDirBusy, match=re.escape(busy)):
            fit(PPOConfig.from_preset("tiny"), out=new)
        with pytest.raises(RunDirBusy, match=re.escape(busy)):
            resume(d)
        with pytest.raises(RunDirBusy, match=re.escape(busy)):
            with held(d):
                pass
    assert os.listdir(new) == [] and _tree_bytes(d) == before
    with held(new):  # let go: held again
        pass


def test_a_run_refused_by_the_lock_leaves_the_other_run_s_folder(tmp_path, capsys,
                                                                  tiny_flags, monkeypatch):
    """Two runs started into a new --out a moment apart: the one refused by the lock had
    found the folder missing, and took it back (empty: the other was compiling), so that a
    third could make it and write there too. Refused, a run holds nothing: it takes
    nothing back."""
    from ppo_jax import fit
    from ppo_jax.config import PPOConfig
    from ppo_jax.run import run_dir

    new = str(tmp_path / "new")
    os.makedirs(new)  # made by the other run after this one found it missing
    monkeypatch.setattr(train_cmd, "first_missing", lambda path: new)
    monkeypatch.setattr(run_dir, "first_missing", lambda path: new)
    with run_dir.held(new):
        one_line_error(capsys, train_cmd.main, *tiny_flags, "--out", new,
                       words="is being written by another process")
        with pytest.raises(run_dir.RunDirBusy):
            fit(PPOConfig.from_preset("tiny"), out=new)
        assert os.path.isdir(new)


def test_a_run_without_checkpoints_is_not_offered_a_resume(runs, tmp_path, capsys, tiny_flags):
    """A directory holding a run refuses a new run; ``--resume`` is advised only where there
    are checkpoints to resume (not after ``--no-save-final``)."""
    d = _copy_run(runs, tmp_path, "kept")
    one_line_error(capsys, train_cmd.main, *tiny_flags, "--out", d,
                   words=f"(metrics.json, checkpoints): continue it with --resume {d}, or "
                         "choose another --out")
    shutil.rmtree(os.path.join(d, "checkpoints"))
    one_line_error(capsys, train_cmd.main, *tiny_flags, "--out", d,
                   words="already holds a run (metrics.json): choose another --out")


def test_the_python_api_refuses_arguments_of_another_type(runs, tmp_path):
    """``fit`` and ``load_policy``, given what the command line would refuse: one line
    (ValueError, TypeError), before anything is written."""
    from ppo_jax import fit, load_policy
    from ppo_jax.config import PPOConfig

    tiny = PPOConfig.from_preset("tiny")
    for every in (-1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="checkpoint_every must be a whole number >= 0"):
            fit(tiny, out=str(tmp_path / "x"), checkpoint_every=every)
    afile = tmp_path / "afile"
    afile.write_text("kept")
    for out in (afile, afile / "sub"):  # (makedirs says "File exists", "Not a directory")
        with pytest.raises(ValueError, match=f"cannot make the run directory {out}: {afile} "
                                             "is a file, not a directory"):
            fit(tiny, out=str(out))
        with pytest.raises(CLIError, match=f"cannot write to output directory '{out}': "
                                           f"{afile} is a file, not a directory"):
            train_cmd.main(["--preset", "tiny", "--out", str(out)])
    assert afile.read_text() == "kept" and not (tmp_path / "x").exists()
    for kw, words in ((dict(run_index="1"), "the run index must be a whole number, got '1'"),
                      (dict(run_index=True), "the run index must be a whole number"),
                      (dict(step="3"), "the checkpoint step must be a whole number, got '3'")):
        with pytest.raises(TypeError, match=words):  # a wrong argument, not a checkpoint's fault
            load_policy(runs["a"], **kw)
    assert load_policy(runs["a"], step=np.int64(3), run_index=np.int32(0)) is not None


def test_disk_trouble_mid_run(tmp_path, compile_cache_dir, monkeypatch, tiny_flags):
    """The second checkpoint cannot be written (disk full): one line, exit 1, and what was
    written before (metrics, the first checkpoint) is intact and restorable."""
    from ppo_jax.run import checkpoint

    real_save = checkpoint.save
    calls = []

    def failing_save(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real_save(*args, **kwargs)

    monkeypatch.setattr(checkpoint, "save", failing_save)
    out = str(tmp_path / "full")
    with pytest.raises(CLIError, match="No space left on device") as err:
        train_cmd.main([*tiny_flags, "--checkpoint-every", "1", "--out", out,
                        "--compile-cache-dir", compile_cache_dir, "--no-progress", "--no-video"])
    assert err.value.code == 1 and "\n" not in str(err.value)
    m = json.load(open(os.path.join(out, "metrics.json")))
    assert m["batch"][:2] == [0, 1]
    monkeypatch.setattr(checkpoint, "save", real_save)
    assert checkpoint.steps(os.path.join(out, "checkpoints")) == [1]
    _, states, _ = checkpoint.restore(os.path.join(out, "checkpoints"))
    assert int(states.batches_done[0]) == 1


def test_default_compile_cache_dir(monkeypatch):
    """--compile-cache-dir's default: PPO_JAX_COMPILE_CACHE_DIR (unless empty), else an
    absolute XDG_CACHE_HOME's ppo_jax/xla, else ~/.cache/ppo_jax/xla."""
    from ppo_jax.cli import common as cli

    home = os.path.join(os.path.expanduser("~"), ".cache", "ppo_jax", "xla")
    monkeypatch.setenv(cli.CACHE_DIR_ENV, "/some/cache")
    monkeypatch.setenv("XDG_CACHE_HOME", "/xdg")
    assert cli.default_cache_dir() == "/some/cache"
    monkeypatch.setenv(cli.CACHE_DIR_ENV, "")
    assert cli.default_cache_dir() == os.path.join("/xdg", "ppo_jax", "xla")
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/dir")  # ignored, as the XDG spec says
    assert cli.default_cache_dir() == home
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.delenv(cli.CACHE_DIR_ENV)
    assert cli.default_cache_dir() == home


def test_bad_flags_and_configs(root_dir, tmp_path, capsys):
    """One process (the whole exit contract: status 2, one line on stderr), then the other
    errors in-process (the same line, which ``cli.run_main`` prints)."""
    assert_one_line_error(run(root_dir, "train.py", "--no-such-flag"), words="unrecognized")
    one_line_error(capsys, train_cmd.main, "--lr", "fast", words="invalid float")
    one_line_error(capsys, train_cmd.main, "--minibatch-size", "5000", "--out",
                   str(tmp_path / "x"), words="larger than the batch")
    one_line_error(capsys, train_cmd.main, "--out", "/proc/forbidden", words="cannot write")
    assert not os.path.exists(tmp_path / "x" / "metrics.json")


def test_x64_is_refused_in_one_line(root_dir, tmp_path, runs):
    """ppo_jax's programs are float32: JAX_ENABLE_X64=1 gets one line, before anything is
    compiled or written (train.py; evaluate.py in the next test) and a ValueError from the
    library."""
    env = {**os.environ, "JAX_ENABLE_X64": "1"}
    out = tmp_path / "x64"
    assert_one_line_error(run(root_dir, "train.py", "--out", str(out), env=env),
                          words="JAX_ENABLE_X64 is set")
    assert not os.path.exists(out / "metrics.json")
    # env_speed.py measured (and printed) float64 steps
    assert_one_line_error(run(root_dir, "env_speed.py", "--envs", "1", env=env),
                          words="JAX_ENABLE_X64 is set")


def test_x64_is_refused_by_evaluate(x64, runs, capsys):
    one_line_error(capsys, evaluate_cmd.main, runs["a"], words="JAX_ENABLE_X64 is set")
    # the benchmark's refusal came from each worker, after every row had started
    from ppo_jax.bench import cli as bench_cli, driver

    ran = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(driver, "measure", lambda *a, **k: ran.append(1))
        one_line_error(capsys, bench_cli.main, "--systems", "ppo_jax", "--envs", "2",
                       words="JAX_ENABLE_X64 is set")
    assert ran == []


def test_x64_library_refusal(x64, tiny_config):
    from ppo_jax.run import runner
    from ppo_jax.run.runs import Runs

    with pytest.raises(ValueError, match="float32"):
        runner.prepare(Runs(tiny_config))


def test_resume_with_contradicting_flags(runs, capsys):
    before = sorted(os.listdir(os.path.join(runs["a"], "checkpoints")))
    one_line_error(capsys, train_cmd.main, "--resume", runs["a"], "--hidden-sizes", "32",
                   words="contradict")
    assert sorted(os.listdir(os.path.join(runs["a"], "checkpoints"))) == before
    one_line_error(capsys, train_cmd.main, "--resume", "/nonexistent/run",
                   words="no such checkpoint directory")


def test_evaluate_bad_inputs(runs, root_dir, tmp_path, capsys):
    assert_one_line_error(run(root_dir, "evaluate.py", str(tmp_path / "missing")),
                          words="no such checkpoint directory")
    (tmp_path / "empty").mkdir()
    one_line_error(capsys, evaluate_cmd.main, str(tmp_path / "empty"), words="no checkpoint")
    one_line_error(capsys, evaluate_cmd.main, runs["a"], "--step", "9",
                   words="no checkpoint at step 9")
    one_line_error(capsys, evaluate_cmd.main, runs["a"], "--episodes", "0")


def _copy_run(runs, tmp_path, name):
    dst = str(tmp_path / name)
    shutil.copytree(runs["a"], dst)
    return dst


def _corrupt(d, kind):
    """Damage one kind of file of the latest step (3) of the run in ``d``."""
    step = os.path.join(d, "checkpoints", "3")
    if kind == "array_data":
        files = glob.glob(os.path.join(step, "state", "**", "d", "*"), recursive=True)
        for f in files:
            with open(f, "r+b") as fh:
                fh.truncate(os.path.getsize(f) // 3)
    elif kind == "_METADATA":
        files = [os.path.join(step, "state", "_METADATA")]
        open(files[0], "w").write("{not json")
    elif kind == "ocdbt_manifest":
        files = glob.glob(os.path.join(step, "state", "**", "manifest.ocdbt"), recursive=True)
        for f in files:
            with open(f, "r+b") as fh:
                fh.truncate(16)
    elif kind == "json_meta":
        files = glob.glob(os.path.join(step, "meta", "*"))
        for f in files:
            open(f, "w").write("{not json")
    assert files, kind


@pytest.mark.parametrize("kind", ["array_data", "_METADATA", "ocdbt_manifest", "json_meta"])
def test_corrupt_checkpoint_gives_one_line(kind, runs, root_dir, tmp_path, compile_cache_dir,
                                           capsys):
    """Each kind of file of the latest step damaged in turn, in a subprocess: orbax's
    background threads once printed tracebacks after our line while the process ended
    (``cli.exit_with_one_line`` now silences them before it writes the line)."""
    d = _copy_run(runs, tmp_path, kind)
    _corrupt(d, kind)
    p = run(root_dir, "evaluate.py", d, cache=compile_cache_dir)
    assert_one_line_error(p, words="step 3")
    # the previous checkpoint is still restorable
    evaluate(capsys, d, "--step", "2", "--episodes", "2", "--json", cache=compile_cache_dir)


def test_readable_corruption_may_succeed_silently(runs, root_dir, tmp_path, compile_cache_dir):
    """Orbax's own step metadata is not needed to read the data: a damaged one may succeed,
    but then with nothing on stderr."""
    d = _copy_run(runs, tmp_path, "ckptmeta")
    open(os.path.join(d, "checkpoints", "3", "_CHECKPOINT_METADATA"), "w").write("xx")
    p = run(root_dir, "evaluate.py", d, "--episodes", "2", cache=compile_cache_dir)
    assert (p.returncode == 0 and p.stderr.strip() == "") or len(p.stderr.strip().splitlines()) == 1


def test_kill_during_checkpoint_writes(root_dir, tmp_path, compile_cache_dir, runs, tiny_flags):
    """SIGKILL at random moments while checkpoints are written, then restore and resume: the
    restore picks the last fully committed step, and the resumed run ends bit-identical to
    an uninterrupted one (run B of the ``runs`` fixture)."""
    from ppo_jax.run import checkpoint

    rng = random.Random(0)
    killed_mid_write = 0
    for attempt in range(3):
        out = str(tmp_path / f"kill{attempt}")
        cmd = [sys.executable, os.path.join(root_dir, "scripts", "train.py"), *tiny_flags,
               "--checkpoint-every", "1", "--out", out, "--compile-cache-dir", compile_cache_dir,
               "--no-progress", "--no-video"]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ckpt = os.path.join(out, "checkpoints")
        target = rng.randint(1, 2)  # kill while writing this step (or just after)
        deadline = time.time() + 300
        while proc.poll() is None and time.time() < deadline:
            names = os.listdir(ckpt) if os.path.isdir(ckpt) else []
            if any(n.startswith(str(target)) and "tmp" in n for n in names):
                time.sleep(rng.uniform(0.0, 0.05))
                killed_mid_write += any("tmp" in n for n in os.listdir(ckpt))
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.002)
        proc.wait(timeout=60)
        steps = checkpoint.steps(ckpt) if os.path.isdir(ckpt) else []
        for s in steps:  # every listed step is complete and restorable
            checkpoint.restore(ckpt, s)
        if not steps:
            continue
        assert train("--resume", out, cache=compile_cache_dir) == 0
        for x, y in zip(params_of(out), params_of(runs["b"])):
            np.testing.assert_array_equal(x, y)
        m = json.load(open(os.path.join(out, "metrics.json")))
        assert m["batch"] == [0, 1, 2]
    assert killed_mid_write >= 1


def _tree_bytes(d):
    """Every file under ``d`` with its bytes, and every folder (None): what a command must
    leave as it was."""
    out = {}
    for root, dirs, files in os.walk(d):
        out.update({os.path.relpath(os.path.join(root, f), d): None for f in dirs})
        for f in files:
            p = os.path.join(root, f)
            out[os.path.relpath(p, d)] = open(p, "rb").read()
    return out


def test_resume_through_checkpoints_continues_in_the_run_and_checkpoints_as_it_did(
        runs, tmp_path, compile_cache_dir):
    """``--resume RUN/checkpoints`` (accepted as evaluate accepts it) continues in RUN: its
    metrics.json and checkpoints, nothing written under checkpoints/ but steps; and without
    the flags again it checkpoints as the run did (A: every batch), deleting none of the
    checkpoints already there."""
    from ppo_jax.run import checkpoint

    d = str(tmp_path / "a")
    shutil.copytree(runs["a"], d)
    for step in ("2", "3"):  # as if killed after batch 1 was saved
        shutil.rmtree(os.path.join(d, "checkpoints", step))
    ck = os.path.join(d, "checkpoints")
    assert train("--resume", ck, "--out", ck, cache=compile_cache_dir) == 0  # the same path
    assert sorted(os.listdir(os.path.join(d, "checkpoints"))) == ["1", "2", "3"]
    ma = json.load(open(os.path.join(runs["a"], "metrics.json")))
    md = json.load(open(os.path.join(d, "metrics.json")))
    for key in ("batch", "frames", "reward", "eval_return"):
        assert md[key] == ma[key], key
    assert checkpoint.checkpointing(checkpoint.open_saved(d)) == (1, 3)


def test_a_resume_saves_at_its_end_as_the_run_did(runs, tmp_path, compile_cache_dir):
    """``--no-save-final`` was not recorded: a resumed run saved a final checkpoint the job
    had declined. Recorded now, it carries over like ``--checkpoint-every`` and ``--keep``
    (given again, the flag decides; a checkpoint that does not record it: save)."""
    from ppo_jax.run import checkpoint

    d = tmp_path / "run"
    shutil.copytree(runs["a"], d)
    ck = d / "checkpoints"
    shutil.rmtree(ck / "3")  # killed after batch 1 was saved, by a job of every 2, no final
    for step in ("1", "2"):
        path = ck / step / "meta" / "metadata"
        meta = json.loads(path.read_text())
        assert meta[checkpoint.CHECKPOINTING] == {"every": 1, "keep": 3, "save_final": True}
        meta[checkpoint.CHECKPOINTING] = {"every": 2, "keep": 3, "save_final": False}
        path.write_text(json.dumps(meta))
    again = tmp_path / "again"
    shutil.copytree(d, again)
    assert train("--resume", str(d), cache=compile_cache_dir) == 0
    assert checkpoint.steps(str(d)) == [1, 2]  # batch 3 is off the schedule: not saved
    assert train("--resume", str(again), "--save-final", cache=compile_cache_dir) == 0
    assert checkpoint.steps(str(again)) == [1, 2, 3]
    saved = checkpoint.open_saved(str(again))
    assert checkpoint.saves_final(saved)
    del saved.meta[checkpoint.CHECKPOINTING]["save_final"]  # as an older ppo_jax wrote it
    assert checkpoint.saves_final(saved)


def test_a_resume_keeps_the_checkpoints_a_run_kept(runs, tmp_path, compile_cache_dir):
    """What a resume checkpoints with unless told: the run's recorded ``--checkpoint-every``
    and ``--keep``; for a checkpoint that records neither (written by an older ppo_jax),
    none on the way and a ``keep`` that deletes none of those already there (orbax's
    ``max_to_keep`` counts them): resumed, such a run with 3 checkpoints (0, 1, 2) ends
    with 4."""
    from ppo_jax.run import checkpoint

    d = tmp_path / "run"
    shutil.copytree(runs["a"], d)
    ck = d / "checkpoints"
    shutil.copytree(ck / "1", ck / "0")  # a third checkpoint before the one resumed from
    shutil.rmtree(ck / "3")
    saved = checkpoint.open_saved(str(d))
    assert checkpoint.checkpointing(saved) == (1, 3)  # A's, as recorded
    for bad in ({"every": -1, "keep": 2}, {"every": 1, "keep": 0}, {"every": True, "keep": 2},
                "x"):
        broken = dataclasses.replace(saved, meta={**saved.meta, checkpoint.CHECKPOINTING: bad})
        assert checkpoint.checkpointing(broken) == (0, 4)
    for step in ("0", "1", "2"):  # as an older ppo_jax wrote them
        path = ck / step / "meta" / "metadata"
        meta = json.loads(path.read_text())
        del meta[checkpoint.CHECKPOINTING]
        path.write_text(json.dumps(meta))
    assert checkpoint.checkpointing(checkpoint.open_saved(str(d))) == (0, 4)
    assert train("--resume", str(d), cache=compile_cache_dir) == 0
    assert checkpoint.steps(str(d)) == [0, 1, 2, 3]


def test_a_run_that_stopped_at_nan_is_labelled_with_its_own_batches(runs, tmp_path, capsys,
                                                                     compile_cache_dir):
    """Run 1 of a job stopped at batch 1 (NaN/Inf) while run 0 trained 3: evaluate and the
    export's source give run 1's own frames, say that its policy is from before that batch,
    and draw its episodes from its own last batch (the keys its evaluation after batch 0
    used), not the checkpoint's step."""
    import jax

    from ppo_jax.eval.evaluate import episode_keys
    from ppo_jax.run import checkpoint

    trainer, states, meta = restore(runs["a"])
    two = jax.tree_util.tree_map(lambda x: np.concatenate([np.asarray(x)] * 2), states)
    two = two.replace(batches_done=np.asarray([3, 1], np.int32),
                      failed_batch=np.asarray([-1, 1], np.int32))
    d = str(tmp_path / "job" / "checkpoints")
    checkpoint.save(d, trainer, two, extra_meta={"failed_batch": [None, 1]})
    _, _, source = checkpoint.restore_for_export(d, run_index=1)
    assert (source["step"], source["frames"], source["failed_batch"]) == (3, 200, 1)
    assert "failed_batch" not in checkpoint.restore_for_export(d, run_index=0)[2]
    capsys.readouterr()
    assert evaluate_cmd.main([d, "--run-index", "1", "--episodes", "1", "--json",
                              "--compile-cache-dir", compile_cache_dir]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (out["checkpoint_step"], out["frames"], out["failed_batch"]) == (3, 200, 1)
    assert evaluate_cmd.main([d, "--run-index", "1", "--episodes", "1",
                              "--compile-cache-dir", compile_cache_dir]) == 0
    assert ("note: run 1 stopped at batch 1 (NaN/Inf in training): this is its policy "
            "before that batch") in capsys.readouterr().out
    from ppo_jax import load_policy

    with pytest.warns(UserWarning, match=r"run 1 stopped at batch 1 \(NaN/Inf in training\): "
                                         "this is its policy before that batch"):
        load_policy(d, run_index=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        load_policy(d, run_index=0)
    from ppo_jax.eval import evaluate

    keys = []
    real = evaluate.mjx_episodes
    try:
        evaluate.mjx_episodes = lambda tr, st, k, *a, **kw: (keys.append(k), real(
            tr, st, k, *a, **kw))[1]
        evaluate_cmd.main([d, "--run-index", "1", "--episodes", "1", "--json",
                           "--compile-cache-dir", compile_cache_dir])
    finally:
        evaluate.mjx_episodes = real
    np.testing.assert_array_equal(keys[0], episode_keys(two.eval_key[1], 1, 1))


def test_resume_of_a_finished_run_changes_nothing(runs, capsys, compile_cache_dir, tmp_path):
    """A finished run resumed (again): one line, exit 0, not a byte of it rewritten (its
    timings in metrics.json were once replaced by a zero-batch resume's). ``--out`` may name
    the run's directory as ``--resume`` does, or through a symbolic link to it. A flag that
    only a new run takes is refused all the same."""
    before = _tree_bytes(runs["b"])
    capsys.readouterr()
    assert train("--resume", runs["b"], cache=compile_cache_dir) == 0
    assert "is finished (3 of 3 batches): nothing to train" in capsys.readouterr().out
    assert train("--resume", runs["b"], "--out", runs["b"], cache=compile_cache_dir) == 0
    link = tmp_path / "link"
    link.symlink_to(runs["b"], target_is_directory=True)
    assert train("--resume", runs["b"], "--out", str(link), cache=compile_cache_dir) == 0
    assert "is finished (3 of 3 batches): nothing to train" in capsys.readouterr().out
    # a new run's flag is refused, finished or not (it was ignored here: exit 0)
    one_line_error(capsys, train_cmd.main, "--resume", runs["b"], "--init-from-torchrl",
                   str(tmp_path / "policy.pt"), "--compile-cache-dir", compile_cache_dir,
                   words="--init-from-torchrl starts a new run: it cannot be used with --resume")
    assert _tree_bytes(runs["b"]) == before


@pytest.mark.parametrize("every, saved", [(1, [1, 2, 3]), (2, [2])])
def test_no_save_final_keeps_the_last_batch_on_the_schedule(every, saved, tmp_path, capsys,
                                                            compile_cache_dir, tiny_flags):
    """``--no-save-final``: the checkpoints of ``--checkpoint-every``, the last batch's among
    them where it falls on the schedule (it was left out: the run then looked unfinished, its
    metrics.json a batch ahead of its checkpoints, and a resume trained that batch again)."""
    from ppo_jax.run import checkpoint

    out = str(tmp_path / "run")
    assert train(*tiny_flags, "--checkpoint-every", str(every), "--no-save-final", "--out",
                 out, cache=compile_cache_dir) == 0
    assert checkpoint.steps(checkpoint.run_checkpoints(out)) == saved
    if saved[-1] == 3:  # all 3 batches saved: finished
        before = _tree_bytes(out)
        capsys.readouterr()
        assert train("--resume", out, cache=compile_cache_dir) == 0
        assert "is finished (3 of 3 batches): nothing to train" in capsys.readouterr().out
        assert _tree_bytes(out) == before


def test_resume_refuses_a_history_it_cannot_read(runs, tmp_path, capsys, compile_cache_dir):
    """An unfinished run whose metrics.json is cut off or has lists of the wrong shape: one
    line before anything is compiled, and nothing rewritten."""
    d = _copy_run(runs, tmp_path, "history")
    shutil.rmtree(os.path.join(d, "checkpoints", "3"))  # stopped after batch 1
    good = json.load(open(os.path.join(d, "metrics.json")))
    for text, words in [('{"reward": [1, 2', "is not JSON"),
                        ("null", "not a metrics.json (not a JSON object)"),
                        ("[1, 2]", "not a metrics.json (not a JSON object)"),
                        (json.dumps({**good, "frames": 5}), "'frames' is not a flat list"),
                        (json.dumps({**good, "reward": good["reward"][:1]}),
                         "'reward' has 1 entries where 'frames' has 3"),
                        # the counts that place every other entry hold no null (a number
                        # unknown), where the metrics may
                        (json.dumps({**good, "batch": [None, *good["batch"][1:]]}),
                         "'batch' is not a flat list of numbers (no null)"),
                        (json.dumps({**good, "frames": [None, *good["frames"][1:]]}),
                         "'frames' is not a flat list of numbers (no null)"),
                        (json.dumps({**good, "eval_frames": [None, *good["eval_frames"][1:]]}),
                         "'eval_frames' is not a flat list of numbers (no null)")]:
        open(os.path.join(d, "metrics.json"), "w").write(text)
        before = _tree_bytes(d)
        one_line_error(capsys, train_cmd.main, "--resume", d, "--compile-cache-dir",
                       compile_cache_dir, words=words)
        assert _tree_bytes(d) == before


def test_flags_that_contradict_each_other(runs, tmp_path, capsys, tiny_flags):
    other = tmp_path / "other"
    one_line_error(capsys, train_cmd.main, "--resume", runs["a"], "--out", str(other),
                   words="cannot move it")
    one_line_error(capsys, train_cmd.main, *tiny_flags, "--sweep", "lr=1e-4,3e-4", "--lr",
                   "1e-3", "--out", str(other), words="--lr: the field is also swept")
    one_line_error(capsys, train_cmd.main, *tiny_flags, "--sweep", "entropy-coeff=0,1e-3",
                   "--entropy-coeff", "0", "--out", str(other), words="also swept")
    assert not other.exists()


def test_a_directory_with_a_runs_files_is_not_written_over(tmp_path, capsys, tiny_flags):
    d = tmp_path / "old"
    d.mkdir()
    (d / "curves.png").write_bytes(b"mine")
    one_line_error(capsys, train_cmd.main, *tiny_flags, "--out", str(d),
                   words="holds files a run writes (curves.png)")
    assert (d / "curves.png").read_bytes() == b"mine"


def test_no_command_writes_into_a_runs_own_folders_or_files(runs, tmp_path, capsys,
                                                             tiny_flags):
    """An output inside a run's checkpoints/ (a numbered folder there once read as the latest
    checkpoint, and broke the run) or tensorboard/, or onto its metrics.json or curves.png:
    one line, and the run's files are as they were."""
    from ppo_jax.cli import compare as compare_cmd
    from ppo_jax.cli import export_torchrl as export_cmd

    pytest.importorskip("torch")
    d = _copy_run(runs, tmp_path, "run")
    ck = os.path.join(d, "checkpoints")
    before = _tree_bytes(d)
    for main, args, words in [
            (evaluate_cmd.main, (d, "--video", os.path.join(ck, "9", "v.mp4")),
             "is inside the checkpoints/ of the run in"),
            (compare_cmd.main, (d, "--out", os.path.join(ck, "8", "c.png")),
             "is inside the checkpoints/ of the run in"),
            (compare_cmd.main, (d, "--out", os.path.join(d, "curves.png")),
             "is the curves.png of the run in"),
            (export_cmd.main, (d, os.path.join(d, "metrics.json")),
             "is the metrics.json of the run in"),
            (export_cmd.main, (d, str(tmp_path / "policy.json")), "must end in .pt or .pth"),
            (export_cmd.main, (d, os.path.join(ck, "3", "meta", "x.pt")),
             "is inside the checkpoints/ of the run in"),
            (train_cmd.main, (*tiny_flags, "--out", ck), "is inside the checkpoints/ of"),
            (train_cmd.main, (*tiny_flags, "--out", os.path.join(ck, "4")),
             "is inside the checkpoints/ of"),
            (train_cmd.main, (*tiny_flags, "--out", os.path.join(d, "tensorboard", "x")),
             "is inside the tensorboard/ of")]:
        one_line_error(capsys, main, *args, words=words)
        assert _tree_bytes(d) == before, args


def test_a_numbered_folder_that_is_no_checkpoint_is_passed_over(runs, tmp_path, capsys):
    """A folder in checkpoints/ named by a number that orbax did not write (empty, or a
    user's file in it) is no checkpoint: the latest is still the run's own. A resume, which
    would save where it stands (orbax refuses a step whose name is taken, and counts and
    deletes such folders among the checkpoints it keeps), is refused before it trains."""
    from ppo_jax.run import checkpoint

    d = _copy_run(runs, tmp_path, "run")
    os.makedirs(os.path.join(d, "checkpoints", "9"))
    os.makedirs(os.path.join(d, "checkpoints", "8"))
    open(os.path.join(d, "checkpoints", "8", "c.png"), "wb").write(b"mine")
    assert checkpoint.steps(d) == [1, 2, 3]
    assert checkpoint.peek_meta(d)["batches_done"] == 3
    assert checkpoint.open_saved(d).step == 3
    assert checkpoint.foreign_steps(os.path.join(d, "checkpoints")) == ["8", "9"]
    shutil.rmtree(os.path.join(d, "checkpoints", "3"))  # unfinished: a resume would train
    before = _tree_bytes(d)
    one_line_error(capsys, train_cmd.main, "--resume", d,
                   words="checkpoints/8 is not a checkpoint but is named like one")
    assert _tree_bytes(d) == before


def test_the_run_names_the_commands_keep_clear_of_are_the_runs_own():
    """``run_dir`` names a run's folders and files without loading orbax and JAX: the
    names are those the modules that write them use."""
    from ppo_jax.run import checkpoint, events, run_dir, runner

    assert run_dir.RUN_FOLDERS == (checkpoint.CHECKPOINTS, events.EVENTS_DIR)
    assert set(run_dir.RUN_OWN_FILES) == {"metrics.json", *runner.RUN_FILES}


def test_a_folder_named_like_a_runs_own_is_not_a_run(tmp_path):
    """Only a run's folders are kept from other outputs: a folder merely named checkpoints/
    or tensorboard/, next to no run, takes outputs (it once proved itself a run's)."""
    from ppo_jax.cli import common as cli

    for name in ("checkpoints", "tensorboard"):
        (tmp_path / name).mkdir()
        cli.check_not_in_a_run(str(tmp_path / name / "run1"), "--out")
        cli.check_not_in_a_run(str(tmp_path / name / "run1" / "p.onnx"), "OUT", file=True)
    (tmp_path / "checkpoints" / "run1").mkdir()  # one run's directory in it
    (tmp_path / "checkpoints" / "run1" / "metrics.json").write_text("{}")
    cli.check_not_in_a_run(str(tmp_path / "checkpoints" / "run2"), "--out")
    with pytest.raises(CLIError, match="is the metrics.json of the run in"):
        cli.check_not_in_a_run(str(tmp_path / "checkpoints" / "run1" / "metrics.json"), "OUT",
                               file=True)
    with pytest.raises(CLIError, match="is inside the tensorboard/ of the run in"):
        cli.check_not_in_a_run(str(tmp_path / "checkpoints" / "run1" / "tensorboard" / "x"),
                               "--out")


def test_fit_keeps_out_of_a_runs_own_folders(runs, tmp_path):
    """``fit(out=...)`` refuses a place inside a run's checkpoints/ or tensorboard/, as
    ``--out`` does, before anything trains: a run made there (``checkpoints/9`` most of
    all) would break the evaluation, export and resume of the run around it."""
    from ppo_jax import PPOConfig, fit

    d = _copy_run(runs, tmp_path, "kept")
    before = _tree_bytes(d)
    for sub in ("checkpoints/9", "checkpoints/new", "tensorboard", "tensorboard/x"):
        place = sub.split("/")[0]
        with pytest.raises(ValueError, match=f"^out {d}/{sub} is inside the {place}/ of the "
                                             f"run in {d}, which that run keeps for itself"):
            fit(PPOConfig.from_preset("tiny"), out=os.path.join(d, sub))
    assert _tree_bytes(d) == before


def test_an_empty_path_is_not_a_flag_left_out(runs, tmp_path, capsys, tiny_flags):
    """``--resume ""`` (an unset shell variable) trained a new run into the default --out."""
    for main, args in [(train_cmd.main, ("--resume", "")),
                       (train_cmd.main, (*tiny_flags, "--init-from-torchrl", " ")),
                       (evaluate_cmd.main, (runs["a"], "--video", "")),
                       (evaluate_cmd.main, (runs["a"], "--env", "")),
                       (train_cmd.main, (*tiny_flags, "--compile-cache-dir", "")),
                       (evaluate_cmd.main, (runs["a"], "--compile-cache-dir", " "))]:
        one_line_error(capsys, main, *args, words="must not be empty")


def test_a_path_that_is_not_utf8(root_dir, tmp_path, capsys, tiny_flags):
    """A path of undecodable bytes: the error line shows it (it once printed nothing, and
    exited 1), and a new run there is refused before it trains (orbax cannot write it)."""
    bad = os.path.join(os.fsencode(str(tmp_path)), b"nope\xff")
    p = subprocess.run([sys.executable, os.path.join(root_dir, "scripts", "evaluate.py"), bad],
                       capture_output=True, timeout=300)
    assert p.returncode == 2 and p.stderr.count(b"\n") == 1, p.stderr
    assert p.stderr.startswith(b"evaluate.py: error: no such checkpoint directory: ")
    assert bad in p.stderr
    one_line_error(capsys, train_cmd.main, *tiny_flags, "--out", os.fsdecode(bad),
                   words="is not valid UTF-8")
    assert not os.path.lexists(bad)
    # the compile cache's directory, by flag or by $PPO_JAX_COMPILE_CACHE_DIR (XLA's
    # TypeError, after the run's --out was made)
    out = str(tmp_path / "new" / "run")
    one_line_error(capsys, train_cmd.main, *tiny_flags, "--out", out, "--compile-cache-dir",
                   os.fsdecode(bad), words="--compile-cache-dir ")
    p = subprocess.run([sys.executable, os.path.join(root_dir, "scripts", "train.py"),
                        *tiny_flags, "--out", out], capture_output=True, timeout=300,
                       env={**os.environ, "PPO_JAX_COMPILE_CACHE_DIR": bad})
    assert p.returncode == 2 and p.stderr.count(b"\n") == 1, p.stderr
    assert p.stderr.startswith(b"train.py: error: $PPO_JAX_COMPILE_CACHE_DIR ")
    assert b"is not valid UTF-8" in p.stderr
    assert not os.path.lexists(bad) and not os.path.lexists(tmp_path / "new")


def test_no_compile_cache_inside_a_run(runs, tmp_path, capsys, tiny_flags):
    """A compile cache in a run's checkpoints/ (its entries stand among the checkpoints) or
    tensorboard/ was taken by every command; refused in one line, nothing made."""
    for folder in ("checkpoints", "tensorboard"):
        cache = os.path.join(runs["a"], folder, "cache")
        for main, args in [(train_cmd.main, (*tiny_flags, "--out", str(tmp_path / "run"))),
                           (evaluate_cmd.main, (runs["a"],))]:
            one_line_error(capsys, main, *args, "--compile-cache-dir", cache,
                           words=f"--compile-cache-dir {cache} is inside the {folder}/ of the "
                                 f"run in {runs['a']}")
            assert not os.path.lexists(cache) and not os.path.lexists(tmp_path / "run")
    new = tmp_path / "new"  # a new run's own folders, not there yet
    one_line_error(capsys, train_cmd.main, *tiny_flags, "--out", str(new), "--compile-cache-dir",
                   str(new / "checkpoints"), words="is inside the checkpoints/ of this run's")
    assert not os.path.lexists(new)
    afile = tmp_path / "afile"  # (makedirs says "File exists", "Not a directory")
    afile.write_text("kept")
    for cache in (afile, afile / "sub"):
        one_line_error(capsys, evaluate_cmd.main, runs["a"], "--compile-cache-dir", str(cache),
                       words=f"cannot use compile cache directory '{cache}': {afile} is a "
                             "file, not a directory")
    assert afile.read_text() == "kept"


def test_a_setting_a_library_refuses_is_one_line(runs, root_dir):
    """MUJOCO_GL and JAX_PLATFORMS that MuJoCo or JAX cannot start with: one line naming the
    variable, not the library's traceback."""
    env = {**os.environ, "MUJOCO_GL": "bogus"}
    assert_one_line_error(run(root_dir, "evaluate.py", runs["a"], env=env),
                          words="invalid value for environment variable MUJOCO_GL: bogus")
    env = {**os.environ, "JAX_PLATFORMS": "bogus"}
    assert_one_line_error(run(root_dir, "evaluate.py", runs["a"], env=env),
                          words="JAX could not start the platforms JAX_PLATFORMS='bogus' names")
    from ppo_jax.util import version

    if not any(version(f"jax-cuda{v}-plugin") for v in (12, 13)):
        env = {**os.environ, "JAX_PLATFORMS": "cuda"}  # JAX asserts where none is installed
        assert_one_line_error(run(root_dir, "evaluate.py", runs["a"], env=env),
                              words="JAX_PLATFORMS='cuda' names: none of them is installed")


def test_a_full_disk_during_a_checkpoint_is_one_line(root_dir, tmp_path, compile_cache_dir,
                                                     tiny_flags):
    """A run into a filesystem that fills up while a checkpoint is written: the one line, not
    the tracebacks of TensorStore's pending writes (a hundred "Event loop is closed")."""
    full = tmp_path / "full"
    full.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=80k", "tmpfs", str(full)],
                      capture_output=True).returncode != 0:
        pytest.skip("mounting a small tmpfs needs privileges this process lacks")
    try:
        p = run(root_dir, "train.py", *tiny_flags, "--out", str(full / "run"),
                cache=compile_cache_dir)
    finally:
        subprocess.run(["umount", str(full)], capture_output=True)
    assert_one_line_error(p, code=1, words="could not save checkpoint step")


def test_a_resume_whose_files_are_directories_is_refused_before_training(runs, tmp_path,
                                                                          capsys):
    """A resumed run rewrites curves.png at its end: a directory there is refused before
    anything trains (it was found after training)."""
    d = _copy_run(runs, tmp_path, "run")
    shutil.rmtree(os.path.join(d, "checkpoints", "3"))
    os.remove(os.path.join(d, "curves.png"))
    os.makedirs(os.path.join(d, "curves.png"))
    before = _tree_bytes(d)
    one_line_error(capsys, train_cmd.main, "--resume", d,
                   words="curves.png is a directory, where the run writes its file")
    assert _tree_bytes(d) == before


def test_json_nested_past_what_python_parses_is_one_line(runs, tmp_path, capsys):
    from ppo_jax.cli import compare as compare_cmd

    d = tmp_path / "deep"
    d.mkdir()
    (d / "metrics.json").write_text("[" * 100_000)
    one_line_error(capsys, compare_cmd.main, str(d), "--out", str(tmp_path / "c.png"),
                   words="is not JSON")


def test_a_reader_that_leaves_gets_no_traceback(runs, root_dir, tmp_path):
    """``compare.py ... | head -0``: stdout's reader is gone before the command writes its
    line; it ends as a command stopped by SIGPIPE does, with nothing on stderr."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # stdout buffered
    p = subprocess.Popen([sys.executable, os.path.join(root_dir, "scripts", "compare.py"),
                          runs["a"], "--reference", "--out", str(tmp_path / "c.png")],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    p.stdout.close()
    err = p.communicate(timeout=300)[1]
    assert p.returncode == 141 and err == b"", err[-2000:]


def test_a_file_where_the_events_go_is_refused_before_compiling(runs, tmp_path, capsys,
                                                                 tiny_flags):
    """OUT/tensorboard that is a file: one line before anything compiles, for a new run and
    a resume (it was found at the first batch, after the compile, as a failed write);
    --no-tensorboard trains there."""
    d = tmp_path / "tb"
    d.mkdir()
    (d / "tensorboard").write_bytes(b"mine")
    one_line_error(capsys, train_cmd.main, *tiny_flags, "--out", str(d),
                   words="tensorboard is not a directory")
    c = tmp_path / "resume"
    shutil.copytree(runs["a"], c)
    shutil.rmtree(c / "checkpoints" / "3")
    shutil.rmtree(c / "tensorboard")
    (c / "tensorboard").write_bytes(b"mine")
    one_line_error(capsys, train_cmd.main, "--resume", str(c),
                   words="tensorboard is not a directory")
    assert (d / "tensorboard").read_bytes() == b"mine" and os.listdir(d) == ["tensorboard"]


def test_a_refusal_removes_only_the_directories_it_made(tmp_path, capsys, tiny_flags):
    (tmp_path / "mine").mkdir()
    out = tmp_path / "mine" / "a" / "b"
    one_line_error(capsys, train_cmd.main, *tiny_flags, "--seed", str(2**32 - 1),
                   "--num-seeds", "2", "--out", str(out), words="go past")
    assert os.listdir(tmp_path / "mine") == []  # a/ and b/ were made and are gone; mine/ stays


@pytest.mark.parametrize("flags,words", [
    (("--env", "brax:fast"), "brax:fast has no MuJoCo model"),  # refused once the env is built
    (("--env", "brax:swimmer"), "brax cannot build brax:swimmer on MJX"),  # no MJX swimmer
    (("--seed", str(2**64)), "seed must be in [-2147483648, 4294967295]"),
    (("--seed", str(2**32 - 1), "--num-seeds", "2"), "go past 4294967295"),
    (("--eval-max-steps", str(3 * 10**9)), "eval_max_steps must be at most"),
    (("--entropy-coeff", "nan"), "entropy_coeff must be finite"),
    (("--sweep", "lr=1e-4,inf"), "lr must be finite"),
    (("--sweep", "clip_epsilon=0.2,1.5"), "clip_epsilon must be at most 1"),
    # refused before anything is compiled or allocated (the host would kill the process)
    (("--num-seeds", str(10**9)), "1,000,000,000 run(s) need at least"),
])
def test_refusals_leave_no_empty_out(flags, words, tmp_path, capsys, tiny_flags):
    out = tmp_path / "new"
    one_line_error(capsys, train_cmd.main, *tiny_flags, *flags, "--out", str(out),
                   words=words)
    assert not out.exists()


def test_evaluate_seed_and_steps_beyond_their_types(runs, capsys):
    one_line_error(capsys, evaluate_cmd.main, runs["a"], "--seed", str(-(2**31) - 1),
                   words="--seed must be in")
    one_line_error(capsys, evaluate_cmd.main, runs["a"], "--seed", str(2**64),
                   words="--seed must be in")
    one_line_error(capsys, evaluate_cmd.main, runs["a"], "--max-steps", str(2**31),
                   words="--max-steps must be in [1, 2147483647]")
    one_line_error(capsys, evaluate_cmd.main, runs["a"], "--episodes", str(2**31),
                   words="--episodes must be in [1, 2147483647]")


@pytest.mark.parametrize("key,value,words", [
    ("batches_done", None, "'batches_done' is missing or not a whole number"),
    # the per-run lists, where present (a hand-edited file once gave tracebacks)
    ("last_eval_frames", [], "'last_eval_frames' is not a list of 1 entries, each a count or"),
    ("last_eval_frames", 5, "'last_eval_frames' is not a list of 1 entries"),
    ("last_eval_return", ["x"], "'last_eval_return' is not a list of 1 entries, each a number"),
    ("last_eval_return", [1e40], "'last_eval_return' is not a list of 1 entries, each a number"),
    ("batches_done_per_run", ["a"], "'batches_done_per_run' is not a list of 1 entries"),
    ("frames_per_run", [None], "'frames_per_run' is not a list of 1 entries, each a count"),
    ("failed_batch", ["x"], "'failed_batch' is not a list of 1 entries"),
    ("failed_batch", [-1], "'failed_batch' is not a list of 1 entries"),
    ("num_runs", 0, "'num_runs' is not a whole number >= 1"),
])
def test_checkpoint_metadata_without_its_fields(key, value, words, runs, tmp_path, capsys):
    """A checkpoint whose metadata lacks a field every reader takes, or holds one of the
    wrong kind: one line naming it."""
    d = _copy_run(runs, tmp_path, "meta")
    for f in glob.glob(os.path.join(d, "checkpoints", "3", "meta", "metadata")):
        meta = json.load(open(f))
        if value is None:
            del meta[key]
        else:
            meta[key] = value
        json.dump(meta, open(f, "w"))
    one_line_error(capsys, evaluate_cmd.main, d, words=words)


def test_memory_the_host_or_device_cannot_give_is_one_line():
    from ppo_jax.cli import common as cli

    class JaxRuntimeError(RuntimeError):  # XLA's error type, by its name
        pass

    line, code = cli.failure_line("train.py", JaxRuntimeError(
        "RESOURCE_EXHAUSTED: Out of memory while trying to allocate 400 bytes.\ndetails"),
        cli.OUT_OF_MEMORY_HINT)
    assert code == 1 and "\n" not in line
    assert line.startswith("train.py: error: out of device memory (RESOURCE_EXHAUSTED: Out of")
    assert "--hidden-sizes" in line
    assert cli.failure_line("x", MemoryError()) == ("x: error: out of host memory", 1)
    assert cli.failure_line("x", JaxRuntimeError("INTERNAL: something else")) is None
    assert cli.failure_line("x", ValueError("a bug")) is None
    assert cli.failure_line("x", SystemExit(2)) is None
    assert cli.failure_line("x", CLIError("bad", code=3)) == ("x: error: bad", 3)


@pytest.mark.parametrize("path,words", [
    ("", "must name a file"), ("DIR", "is a directory"), ("/proc/forbidden/x.pt", "cannot write"),
    # 250 bytes: within the file system's 255, not with the ".tmp.<pid>" it is written under
    ("LONG", "is longer than the file system takes (250 bytes; at most 239, with room for"),
])
def test_output_files_are_checked_before_anything_runs(path, words, tmp_path):
    from ppo_jax.cli import common as cli

    if os.pathconf(tmp_path, "PC_NAME_MAX") != 255 and path == "LONG":
        pytest.skip("a file system whose names are not at most 255 bytes")
    path = {"DIR": str(tmp_path), "LONG": str(tmp_path / "new" / ("a" * 245 + ".onnx"))}.get(
        path, path)
    with pytest.raises(CLIError, match=re.escape(words)):
        cli.check_output_file(path, "OUT")
    assert cli.check_output_file(str(tmp_path / "new" / "x.pt"), "OUT").endswith("x.pt")
    assert (tmp_path / "new").is_dir() and not (tmp_path / "new" / "x.pt").exists()


@pytest.mark.parametrize("script,args,words", [
    ("env_speed.py", ("--envs", "0", "4"), "--envs must be counts in [1, 2147483647]"),
    ("env_speed.py", ("--envs", str(10**20)), "--envs must be counts in [1, 2147483647]"),
    ("env_parity.py", ("--steps", "-3"), "--steps must be in [1, 2147483647], got -3"),
    ("env_parity.py", ("--steps", str(10**20)), "--steps must be in [1, 2147483647]"),
    ("env_parity.py", ("--env", "brax:inverted_pendulum"), "is not a Gymnasium port"),
    ("tutorial.py", ("--total-frames", "0", "--no-torchrl"), "total_frames must be >= 1"),
])
def test_small_scripts_refuse_bad_numbers(script, args, words, root_dir):
    assert_one_line_error(run(root_dir, script, *args), words=words)


def test_tutorial_does_not_write_over_a_training_run(runs, root_dir, tmp_path):
    """The walkthrough replaces only its own files: a training run, with its checkpoints or
    without (``--no-save-final``), is refused in one line and left as it was."""
    d = _copy_run(runs, tmp_path, "tut")
    assert json.load(open(os.path.join(d, "metrics.json")))["written_by"] == "scripts/train.py"
    before = _tree_bytes(d)
    assert_one_line_error(run(root_dir, "tutorial.py", "--out", d, "--no-torchrl"),
                          words="holds a run (metrics.json, checkpoints, curves.png) whose "
                                "metrics.json does not say this walkthrough wrote it")
    assert _tree_bytes(d) == before
    shutil.rmtree(os.path.join(d, "checkpoints"))  # as --no-save-final leaves a run
    before = _tree_bytes(d)
    assert_one_line_error(run(root_dir, "tutorial.py", "--out", d, "--no-torchrl"),
                          words="holds a run (metrics.json, curves.png) whose metrics.json "
                                "does not say this walkthrough wrote it")
    assert _tree_bytes(d) == before
    os.makedirs(tmp_path / "dirs" / "curves.png")  # where the walkthrough writes its figure
    json.dump({"written_by": "scripts/tutorial.py"}, open(tmp_path / "dirs" / "metrics.json", "w"))
    assert_one_line_error(run(root_dir, "tutorial.py", "--out", str(tmp_path / "dirs"),
                              "--no-torchrl"), words="curves.png is a directory")


@pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning")  # preexec_fn forks this process
# (beside JAX's threads): the child only resets a signal and execs
def test_tutorial_stops_in_one_line_and_leaves_no_empty_out(runs, root_dir, tmp_path,
                                                           compile_cache_dir):
    """The walkthrough as the commands: a refusal after its --out was made, and a Ctrl-C
    while it runs, end in one line (a Ctrl-C was a traceback) and take back the empty
    folders it made."""
    out = tmp_path / "new" / "tut"
    cache = os.path.join(runs["a"], "checkpoints", "cache")
    assert_one_line_error(run(root_dir, "tutorial.py", "--out", str(out), "--no-torchrl",
                              "--compile-cache-dir", cache), words="is inside the checkpoints/")
    assert not os.path.lexists(tmp_path / "new")
    proc = subprocess.Popen(
        [sys.executable, os.path.join(root_dir, "scripts", "tutorial.py"), "--out", str(out),
         "--no-torchrl", "--total-frames", "1000", "--compile-cache-dir", compile_cache_dir],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # as from a terminal: a suite started as a background job of a shell script hands its
        # children SIGINT ignored (the walkthrough then rightly runs on)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        first = proc.stdout.readline()  # JAX is loaded: the sections run from here
        assert first.startswith("JAX "), first
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 130 and err == "tutorial.py: interrupted\n", err[-2000:]
    assert not os.path.lexists(tmp_path / "new")


def test_every_command_prints_its_help(capsys, root_dir):
    """``--help`` of every command exits 0 with its flags (a field's docstring holding a
    ``%`` once broke argparse's formatting of train.py's help)."""
    from ppo_jax.bench import cli as bench_cli
    from ppo_jax.cli import compare, export_onnx, export_torchrl

    for command in (train_cmd, evaluate_cmd, compare, export_onnx, export_torchrl, bench_cli):
        with pytest.raises(SystemExit) as e:
            command.build_parser().parse_args(["--help"])
        assert e.value.code == 0
        assert "--help" in capsys.readouterr().out
    # each flag says its default once, and only a default there is (it said "default 3;
    # with --resume, the run's own) (default: None)" of --keep)
    text = train_cmd.build_parser().format_help()
    flags = re.split(r"\n  (?=-)", text.split("options:", 1)[1])
    said = [f for f in flags if len(re.findall(r"\(default[ :]", f)) > 1]
    assert not said, said
    assert not re.search(r"\(default: (None|\[\]|False)\)", text)
    block = {f.split()[0]: " ".join(f.split()) for f in flags if f.strip()}
    assert block["--device"].endswith("(default: auto)")
    assert block["--lr"] == "--lr LR Adam learning rate. (default: 0.0003)"
    assert block["--keep"] == ("--keep K checkpoints to keep (default 3; with --resume, the "
                               "run's own)")
    for script in ("env_speed.py", "env_parity.py", "tutorial.py"):
        proc = run(root_dir, script, "--help", timeout=300)
        assert proc.returncode == 0 and "--help" in proc.stdout, (script, proc.stderr[-500:])
