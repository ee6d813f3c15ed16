"""Training's evaluation on the host: in MuJoCo C (``eval_sim='mujoco'``:
:mod:`ppo_jax.eval.host` runs the episodes, :mod:`ppo_jax.run.host_eval` the worker thread)
and MJX's own episode on the host's CPU (``eval_sim='mjx-cpu'``).

Tolerance of MuJoCo C's returns: ``rtol=1e-4``, with equal episode lengths. The two evaluations start
from the same state (the MJX reset of the same key) and act with the same float32 actor; what
differs is the simulator: MJX in float32 with its capped solver, MuJoCo C in float64 with
MuJoCo's own settings. Over the horizon where the tiny run's policy keeps the pendulum up
(it falls within ~10-30 steps) the two agree to ~1e-4 in the observations and rewards
(``tests/test_mujoco_c.py`` measures the float32 drift: 7e-6 after 10 steps, 9e-5 after 20,
3e-4 after 30), so whole returns (a sum of ~9.x per step) agree far inside 1e-4 relative;
``tests/test_mujoco_c.py`` compares a restored policy's episodes at the same 1e-4. Measured
here (2026-12-04, 16 episodes of 8-10 steps): at most 1.2e-7 relative, one float32 ulp of
the return (MuJoCo C's float64 sum cast to float32 against MJX's float32 sum).
"""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import pytest

from ppo_jax.cli import train as train_cmd
from ppo_jax.eval.host import MujocoEvaluator
from ppo_jax.run import host_eval, programs, runner
from ppo_jax.run.runs import Runs
from tests.helpers import one_line_error

RTOL = 1e-4


@pytest.fixture(scope="module")
def job(tiny_config):
    """The tiny run, two seeds (the run axis), trained with MJX's evaluation on the training
    device (also beside a GPU)."""
    j = runner.prepare(Runs(tiny_config.replace(eval_sim="mjx"), 2))
    return runner.train_batches(j)


@pytest.mark.gpu
def test_same_returns_as_mjx_from_the_same_start_states(job):
    """The evaluation after batch ``i`` of both runs in both simulators, for the final
    policies and the keys of eight batches (16 episodes)."""
    states = job.states
    host = MujocoEvaluator(job.trainer, 2)
    actor, stats, keys = jax.device_get((states.params.actor, states.obs_stats,
                                         states.eval_key))
    worst = 0.0
    for i in range(8):
        mjx = jax.device_get(job.programs.evaluate(states, np.int32(i)))
        ev = host(actor, stats, keys, i)
        np.testing.assert_array_equal(ev.eval_steps, mjx.eval_steps)
        assert ev.eval_return.dtype == np.float32 and ev.eval_steps.dtype == np.int32
        np.testing.assert_allclose(ev.eval_return, mjx.eval_return, rtol=RTOL)
        worst = max(worst, float(np.max(np.abs(ev.eval_return / mjx.eval_return - 1))))
    print(f"max relative return difference, MuJoCo C vs MJX: {worst:.2e}")


def _read(path):
    with open(path) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def five_batches(tiny_config, tmp_path_factory):
    """``(config, metrics)`` of the tiny run over 5 batches, evaluated after batches 0, 2
    and 4 by MJX on the training device."""
    cfg = tiny_config.replace(total_frames=1000, eval_every=2)
    out = tmp_path_factory.mktemp("mjx") / "run"
    _, ref = runner.fit(cfg.replace(eval_sim="mjx"), out=str(out), tensorboard=False)
    return cfg, ref


def test_run_records_host_evaluations_at_their_batches(five_batches, tmp_path,
                                                       compile_cache_dir, capsys):
    """A run with ``eval_sim='mujoco'`` trains exactly as with MJX's evaluation (every
    per-batch number equal) and records an evaluation at each of the same batches, in order,
    with returns close to MJX's; on_eval sees each once, after its batch; the metrics.json
    of a checkpoint holds the evaluations up to it; TensorBoard has them at their frames."""
    cfg, ref = five_batches
    seen, batches = [], []
    _, got = runner.fit(cfg.replace(eval_sim="mujoco"), out=str(tmp_path / "host"),
                        checkpoint_every=2, host_evaluator=MujocoEvaluator,
                        on_batch=lambda i, m, ev: batches.append((i, ev)),
                        on_eval=lambda i, ev: seen.append((i, len(batches))))
    assert ref["eval_frames"] == got["eval_frames"] == [200, 600, 1000]
    assert got["eval_steps"] == ref["eval_steps"]
    np.testing.assert_allclose(got["eval_return"], ref["eval_return"], rtol=RTOL)
    assert got["last_eval_return"] == got["eval_return"][-1]
    assert got["written_by"] == "fit"
    for key in ("batch", "frames", "reward", "step_count", "lr", "grad_norm"):
        assert got[key] == ref[key], key
    assert [i for i, _ in batches] == list(range(5)) and all(ev is None for _, ev in batches)
    assert [i for i, _ in seen] == [0, 2, 4]
    assert all(recorded > i for i, recorded in seen)  # each landed after its batch
    assert got["config"]["eval_sim"] == "mujoco"
    assert (got["eval_sim"], ref["eval_sim"]) == ("mujoco", "mjx:cpu")  # where they ran

    # evaluate.py replays the logged evaluation only where it ran (MJX's episode from the
    # same start state rounds otherwise): --sim mujoco does, MJX does not, and says why
    from ppo_jax.cli import evaluate as evaluate_cmd

    def evaluated(*flags):
        capsys.readouterr()
        assert evaluate_cmd.main([str(tmp_path / "host"), "--episodes", "1", "--no-progress",
                                  "--compile-cache-dir", compile_cache_dir, *flags]) == 0
        return capsys.readouterr().out

    out = json.loads(evaluated("--sim", "mujoco", "--json"))
    assert out["replays_logged_eval"] and out["logged_eval_sim"] == "mujoco"
    assert np.float32(out["returns"][0]) == np.float32(got["eval_return"][-1])  # (logged f32)
    out = json.loads(evaluated("--json"))
    assert not out["replays_logged_eval"] and out["sim"] == "mjx"
    assert ("does not replay it: simulated in MJX on the cpu (training's in MuJoCo C: the same "
            "episode, other rounding; --sim mujoco replays it)") in evaluated()
    out = json.loads(evaluated("--sim", "both", "--json"))  # the MuJoCo C column does
    assert out["replays_logged_eval"] and out["replayed_in"] == "mujoco"
    assert "episode 0 in MuJoCo C replays the evaluation logged" in evaluated("--sim", "both")

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(os.path.join(tmp_path, "host", "tensorboard", "seed_0"),
                           size_guidance={"scalars": 0})
    acc.Reload()
    events = acc.Scalars("eval_return")
    assert [e.step for e in events] == [200, 600, 1000]
    np.testing.assert_allclose([e.value for e in events], got["eval_return"], rtol=1e-6)


def test_mjx_on_the_host_s_cpu_is_the_evaluate_program_s_episode(job, five_batches,
                                                                  tmp_path):
    """``eval_sim='mjx-cpu'``: the ``evaluate`` program's episode compiled for the host's
    CPU and run in the worker thread. Per run (2 runs, 8 batches' keys; the evaluator
    obtaining its program itself) it gives what the ``evaluate`` program gives; a run with it
    trains as with MJX's evaluation on the device and records the same evaluations, and its
    job has an ``evaluate_cpu`` program instead of an ``evaluate`` one."""
    states = job.states
    host = host_eval.MjxCpuEvaluator(job.trainer, 2)
    actor, stats, keys = jax.device_get((states.params.actor, states.obs_stats,
                                         states.eval_key))
    for i in range(8):
        mjx = jax.device_get(job.programs.evaluate(states, np.int32(i)))
        ev = host(actor, stats, keys, i)
        assert ev.eval_return.dtype == np.float32 and ev.eval_steps.dtype == np.int32
        np.testing.assert_array_equal(ev.eval_steps, mjx.eval_steps)
        np.testing.assert_array_equal(ev.eval_return, mjx.eval_return)

    cfg, ref = five_batches
    prepared = []
    real_prepare = runner.prepare

    def prepare(*a, **kw):
        prepared.append(real_prepare(*a, **kw))
        return prepared[-1]

    import unittest.mock

    with unittest.mock.patch.object(runner, "prepare", prepare):
        _, got = runner.fit(cfg.replace(eval_sim="mjx-cpu"), out=str(tmp_path / "run"),
                            tensorboard=False)
    programs_ = prepared[0].programs
    assert programs_.evaluate is None and programs_.evaluate_cpu is not None
    assert [i.name for i in programs_.infos] == ["init", "update", "evaluate_cpu"]
    for key in ("batch", "frames", "reward", "step_count", "lr", "grad_norm", "eval_frames",
                "eval_steps", "eval_return"):
        assert got[key] == ref[key], key


def test_checkpoint_holds_its_evaluations(tiny_config, tmp_path):
    """Batch 2's evaluation is waited for before the checkpoint after batch 3 (and the
    metrics.json written then holds it)."""
    cfg = tiny_config.replace(total_frames=1000, eval_every=2, eval_sim="mujoco")
    job = runner.prepare(Runs(cfg))
    saved = []

    def on_checkpoint(j):
        h = j.log.history
        saved.append((j.start, list(h["eval_frames"][0])))

    runner.train_batches(job, checkpoint_every=2, on_checkpoint=on_checkpoint,
                         host_evaluator=MujocoEvaluator)
    assert saved == [(2, [200]), (4, [200, 600])]
    assert job.log.history["eval_frames"][0] == [200, 600, 1000]


def test_auto_keeps_mjx_on_the_cpu_and_evaluates_on_the_host_beside_a_gpu(job, tiny_config):
    assert tiny_config.eval_sim == "auto"
    env = job.trainer.env
    assert job.platform == "cpu"
    assert host_eval.choose(tiny_config, env, "cpu", MujocoEvaluator) == "mjx"
    assert host_eval.on_device(tiny_config, "cpu")
    # beside a GPU: MuJoCo C for a port with its evaluator, else MJX on the host's CPU
    assert host_eval.choose(tiny_config, env, "gpu", MujocoEvaluator) == "mujoco"
    assert host_eval.choose(tiny_config, env, "gpu", None) == "mjx-cpu"
    assert host_eval.choose(tiny_config, object(), "gpu", MujocoEvaluator) == "mjx-cpu"
    assert not host_eval.on_device(tiny_config, "gpu")
    for sim in ("mujoco", "mjx-cpu"):  # asked for: wherever the runs train
        assert host_eval.choose(tiny_config.replace(eval_sim=sim), env, "cpu",
                                MujocoEvaluator) == sim
        assert not host_eval.on_device(tiny_config.replace(eval_sim=sim), "cpu")
    assert host_eval.choose(tiny_config.replace(eval_sim="mjx"), env, "gpu",
                            MujocoEvaluator) == "mjx"
    assert host_eval.on_device(tiny_config.replace(eval_sim="mjx"), "gpu")
    # no evaluation at all: nothing to put anywhere
    assert host_eval.choose(tiny_config.replace(eval_sim="mujoco", eval_every=0), env,
                            "gpu", None) == "mjx"


def test_without_jax_s_cpu_backend_auto_keeps_mjx(tiny_config, monkeypatch):
    """A process whose JAX runs without its CPU backend (``JAX_PLATFORMS=cuda``): ``auto``
    evaluates on the training device, ``mjx-cpu`` is refused in one line, and the
    statistics stay in ``init``."""
    trainer = runner.build_trainer(tiny_config)
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert programs.host_statistics(trainer)
    monkeypatch.setattr(programs, "host_cpu", lambda: None)
    assert not programs.host_statistics(trainer)
    assert host_eval.on_device(tiny_config, "gpu")
    assert host_eval.choose(tiny_config, None, "gpu", None) == "mjx"
    with pytest.raises(ValueError, match="JAX_PLATFORMS") as e:
        host_eval.check_eval_sim(tiny_config.replace(eval_sim="mjx-cpu"))
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="JAX_PLATFORMS"):  # before anything is compiled
        runner.prepare(Runs(tiny_config.replace(eval_sim="mjx-cpu")))


def test_a_job_evaluating_on_the_host_has_the_program_its_evaluator_runs(tiny_config, tmp_path,
                                                                       monkeypatch):
    """Where ``auto`` evaluates on the host (forced here, as beside a GPU), ``prepare`` builds
    what the evaluator it is told of will run: nothing more for MuJoCo C (the run then
    evaluates there, at the usual batches), ``evaluate_cpu`` without an evaluator."""
    monkeypatch.setattr(host_eval, "on_device", lambda config, platform: False)
    seen = []
    _, got = runner.fit(tiny_config, out=str(tmp_path / "run"), tensorboard=False,
                        host_evaluator=MujocoEvaluator, on_eval=lambda i, ev: seen.append(i))
    assert set(got["compile"]) == {"init", "update"}
    assert seen == [0, 2] and got["eval_frames"] == [200, 600]
    job = runner.prepare(Runs(tiny_config))
    assert [i.name for i in job.programs.infos] == ["init", "update", "evaluate_cpu"]


def test_bad_choices_give_one_line(tiny_config, tmp_path, capsys, compile_cache_dir):
    # an env without a MuJoCo C twin: refused before anything is built
    for env_id in ("brax:inverted_pendulum", "playground:CartpoleBalance"):
        with pytest.raises(ValueError, match="only the Gymnasium MuJoCo ports") as e:
            host_eval.check_eval_sim(tiny_config.replace(env=env_id, eval_sim="mujoco"),
                                     factory=MujocoEvaluator)
        assert "\n" not in str(e.value) and env_id in str(e.value)
    # auto, and MJX on the host's CPU, evaluate them
    for sim in ("auto", "mjx-cpu"):
        host_eval.check_eval_sim(tiny_config.replace(env="brax:inverted_pendulum",
                                                     eval_sim=sim), factory=MujocoEvaluator)
    # the library without the host evaluator (the run layer never imports the eval layer)
    with pytest.raises(ValueError, match="needs a host evaluator") as e:
        runner.fit(tiny_config.replace(eval_sim="mujoco"))
    assert "\n" not in str(e.value)
    # the command: an unknown value, and a brax env (one line, exit 2, before compiling)
    one_line_error(capsys, train_cmd.main, "--eval-sim", "gpu",
                   words="--eval-sim")
    one_line_error(capsys, train_cmd.main, "--env",
                   "brax:inverted_pendulum", "--eval-sim", "mujoco", "--out",
                   str(tmp_path / "brax"), "--no-compile-cache", words="only the Gymnasium")
    assert not os.path.exists(tmp_path / "brax")  # nothing written


def test_progress_bar_shows_an_evaluation_when_it_lands(tiny_config, capsys):
    from ppo_jax.core.train import EvalMetrics

    bar = train_cmd.Progress(tiny_config, 0, enabled=True)
    m = type("M", (), {"reward": np.float32([1.5]), "step_count": np.int32([7]),
                           "lr": np.float32([3e-4])})()
    bar(0, m, None)  # batch 0's metrics, its evaluation still running
    assert "eval" not in bar.bar.desc and "average reward" in bar.bar.desc
    bar.add_eval(0, EvalMetrics(eval_return=np.float32([12.5]), eval_steps=np.int32([3])))
    assert "eval cumulative reward:  12.5000" in bar.bar.desc
    assert "eval step-count: 3" in bar.bar.desc and "average reward" in bar.bar.desc
    bar(1, m, None)  # the next batch keeps showing it
    assert "eval cumulative reward:  12.5000" in bar.bar.desc
    bar.close()


def test_progress_bar_leaves_out_the_runs_that_stopped(tiny_config):
    """With the job's log, the bar's numbers are the mean over the runs metrics.json records
    them for: a run stopped at NaN/Inf counts in the batch it failed at (as metrics.json
    keeps that batch's numbers) and drops out after it (its frozen state's numbers are not
    the run's); its evaluations drop out from that batch on, and an evaluation that lands
    late counts the runs its batch left training."""
    from ppo_jax.core.train import EvalMetrics

    m = type("M", (), {"reward": np.float32([1.5, 8.0, 2.5]), "step_count": np.int32([7, 99, 5]),
                       "lr": np.float32([3e-4, 5e-4, 1e-4])})()
    ev = EvalMetrics(eval_return=np.float32([10.0, 500.0, 20.0]), eval_steps=np.int32([3, 9, 4]))
    log = type("Log", (), {"failed": [None, 0, None]})()  # run 1 failed at batch 0
    bar = train_cmd.Progress(tiny_config, 0, enabled=True, log=log)
    bar(0, m, ev)
    assert "average reward= 4.0000 (init= 4.0000)" in bar.bar.desc  # run 1 counts at batch 0
    assert "step count (max): 99" in bar.bar.desc and "lr policy:  0.0003" in bar.bar.desc
    assert "eval cumulative reward:  15.0000 (init:  15.0000), eval step-count: 4" in bar.bar.desc
    bar(1, m, None)  # ... and not after it
    assert "average reward= 2.0000 (init= 4.0000)" in bar.bar.desc
    assert "step count (max): 7" in bar.bar.desc and "lr policy:  0.0002" in bar.bar.desc
    log.failed = [None, 0, 2]  # run 2 failed at batch 2, after batch 1's evaluation ran
    bar.add_eval(1, ev)
    assert "eval cumulative reward:  15.0000" in bar.bar.desc
    bar.add_eval(2, ev)  # batch 2's: run 0's alone
    assert "eval cumulative reward:  10.0000 (init:  15.0000)" in bar.bar.desc
    log.failed = [4, 0, 2]  # no run left after batch 4: the bar keeps its numbers
    bar(5, m, None)
    assert "average reward= 2.0000" in bar.bar.desc
    assert bar.bar.n == 3 * tiny_config.frames_per_batch
    bar.close()


@pytest.mark.gpu
def test_command_evaluates_on_the_host(tiny_flags, tmp_path, compile_cache_dir):
    """``scripts/train.py --eval-sim mujoco`` wires the MuJoCo C evaluator in: the same
    evaluation batches as MJX's (the tiny preset: 0 and 2), recorded in metrics.json."""
    out = str(tmp_path / "run")
    assert train_cmd.main([*tiny_flags, "--eval-sim", "mujoco", "--out", out,
                           "--compile-cache-dir", compile_cache_dir, "--no-progress",
                           "--no-video"]) == 0
    got = _read(os.path.join(out, "metrics.json"))
    assert got["config"]["eval_sim"] == "mujoco"
    assert got["eval_frames"] == [200, 600] and len(got["eval_return"]) == 2
    assert all(n > 0 for n in got["eval_steps"])


def test_a_slow_host_holds_the_loop_back_instead_of_queueing_without_bound():
    """With ``MAX_IN_FLIGHT`` evaluations unfinished, the next submit waits for the oldest;
    every evaluation still lands, in batch order, with its own batch's policy."""
    import threading
    import types

    import jax.numpy as jnp

    gates = [threading.Event() for _ in range(4)]
    seen = []

    def evaluator(actor, stats, eval_key, i):
        gates[i].wait(timeout=30)
        seen.append((i, float(actor["w"])))
        return i

    host = host_eval.HostEvaluations(evaluator)
    state = lambda i: types.SimpleNamespace(params=types.SimpleNamespace(
        actor={"w": jnp.float32(i)}), obs_stats=jnp.zeros(2), eval_key=jnp.zeros(2, jnp.uint32))
    try:
        for i in range(host_eval.MAX_IN_FLIGHT):
            host.submit(state(i), i)  # returns at once
        third = threading.Thread(target=host.submit, args=(state(2), 2))
        third.start()
        third.join(timeout=1.0)
        assert third.is_alive()  # held back: two evaluations are unfinished
        gates[0].set()
        third.join(timeout=30)
        assert not third.is_alive()
        for g in gates:
            g.set()
        host.submit(state(3), 3)
        assert [i for i, _ in host.landed(3, wait=True)] == [0, 1, 2, 3]
        assert seen == [(0, 0.0), (1, 1.0), (2, 2.0), (3, 3.0)]
    finally:
        for g in gates:
            g.set()
        host.close()
