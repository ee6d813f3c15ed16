"""Scale-out with JAX's own runtime, on this machine's CPU: four forced host devices (see
conftest) and two real processes joined by ``jax.distributed`` over 127.0.0.1.

1. a run sharded over 4 devices equals the one-device run (same algorithm, up to the order of
   floating-point reductions);
2. two processes x two devices form one job whose final parameters agree on both processes
   and equal the single-process run;
3. checkpoints cross device counts both ways (resume and restore);
4. a 2 x 2 sweep x 2 seeds in one program equals the same 8 runs made one by one;
5. bad input (device counts, sweeps, the multi-process job) gives one line.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ppo_jax.run import checkpoint, compile_cache, host_eval, parallel, programs, runner
from ppo_jax.cli import common as cli
from ppo_jax.cli import train as train_cmd
from ppo_jax.config import PPOConfig
from ppo_jax.core.train import make_train
from ppo_jax.run.runs import Runs, parse_sweep
from ppo_jax.run.parallel import LayoutError, choose_devices, gather, make_layout

TINY = PPOConfig.from_preset("tiny")  # conftest's tiny_config, needed at module level here
TINY_FLAGS = ("--preset", "tiny")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def flat_params(states, run: int = 0) -> np.ndarray:
    return np.concatenate([gather(x)[run].ravel()
                           for x in jax.tree_util.tree_leaves(states.params)])


def rel_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _train(out, devices, **kw):
    """``(summary, job, out)`` of TINY on ``devices`` devices, a checkpoint every batch."""
    os.makedirs(out)
    summary, run = runner.run_training(Runs(TINY), out=str(out), devices=devices,
                                       checkpoint_every=1, **kw)
    return summary, run, str(out)


@pytest.fixture(scope="module")
def one(tmp_path_factory):
    return _train(tmp_path_factory.mktemp("one") / "run", devices=1)


@pytest.fixture(scope="module")
def four(tmp_path_factory):
    return _train(tmp_path_factory.mktemp("four") / "run", devices=4)


def test_tiny_config_splits_over_four_devices(tiny_config):
    assert TINY == tiny_config
    assert TINY.num_envs == 4 and TINY.minibatch_size % 4 == 0 and TINY.num_batches == 3


# --- 1. sharded == one device --------------------------------------------------------------
def test_four_devices_equal_one_device(one, four):
    (s1, r1, _), (s4, r4, _) = one, four
    assert r1.trainer.layout is None
    layout = r4.trainer.layout
    assert layout.mesh.size == 4 and layout.env_shards == 4
    # the env state really is split: each device holds one env of each run
    obs = r4.states.env_state.obs
    assert len(obs.sharding.device_set) == 4
    assert {s.data.shape[1] for s in obs.addressable_shards} == {1}
    assert rel_diff(flat_params(r4.states), flat_params(r1.states)) < 1e-5
    for key in ("reward", "loss", "loss_critic", "grad_norm"):
        np.testing.assert_allclose(s4[key], s1[key], rtol=1e-4, atol=1e-6, err_msg=key)
    assert s4["eval_frames"] == s1["eval_frames"]
    np.testing.assert_allclose(s4["eval_return"], s1["eval_return"], rtol=1e-4)
    assert s4["layout"] == layout.describe() and s1["layout"] is None


def test_running_statistics_over_devices_and_runs(tmp_path):
    """``obs_norm="running"`` with 2 seeds on 4 devices (2 runs x 2 env shards): the moments
    of a batch split over devices are those of the one-device run (up to the order of the
    reductions), per run."""
    cfg = TINY.replace(obs_norm="running")
    jobs = []
    for devices in (1, 4):
        out = tmp_path / f"d{devices}"
        os.makedirs(out)
        jobs.append(runner.run_training(Runs(cfg, num_seeds=2), out=str(out),
                                        devices=devices)[1])
    m1, m4 = (jax.device_get(j.states.obs_moments) for j in jobs)
    layout = jobs[1].trainer.layout
    assert layout.mesh.size == 4 and layout.env_shards == 2 and m4.mean.shape == m1.mean.shape
    np.testing.assert_array_equal(m4.count, m1.count)
    np.testing.assert_allclose(m4.mean, m1.mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(m4.m2, m1.m2, rtol=1e-4)
    assert not np.allclose(m1.mean[0], m1.mean[1])  # two runs, two sets of moments
    for r in (0, 1):
        assert rel_diff(flat_params(jobs[1].states, r), flat_params(jobs[0].states, r)) < 1e-5


def _init_states(trainer, runs, host_stats):
    """The first states of ``runs`` from the ``init`` program alone, with the statistics
    inside it or (``host_stats``) from the ``stats`` program on the host's CPU."""
    progs = programs.build_programs(trainer, runs.num_runs, need=("init",),
                                    host_stats=host_stats)
    assert (progs.stats is not None) == host_stats
    states, stats_s = programs.run_init(progs, trainer, runs)
    assert (stats_s is not None) == host_stats
    return states


def test_statistics_on_the_host_equal_init_s_own():
    """A job on an accelerator draws its normalization statistics in a ``stats`` program on
    the host's CPU and hands them to ``init`` (over the mesh's rows of runs): the states are
    bit for bit those of ``init`` drawing them itself, per run, on 2 runs x 2 env devices
    (with ``obs_norm="running"``: the moments the statistics keep taking in too)."""
    cfg = TINY.replace(obs_norm="running")
    runs = Runs(cfg, num_seeds=2)
    own = jax.device_get(_init_states(make_train(cfg), runs, host_stats=False))
    layout = make_layout(2, cfg.num_envs, 4)
    host = _init_states(make_train(cfg, layout), runs, host_stats=True)
    assert host.obs_stats.loc.sharding == layout.runs()
    assert len(host.env_state.obs.sharding.device_set) == 4
    host = jax.device_get(host)
    assert not np.array_equal(own.obs_stats.loc[0], own.obs_stats.loc[1])
    assert own.obs_moments is not None and host.obs_moments is not None
    for a, b in zip(jax.tree_util.tree_leaves(host), jax.tree_util.tree_leaves(own)):
        np.testing.assert_array_equal(a, b)


def test_the_program_store_serves_four_device_programs(four):
    """The 4-device evaluate program, loaded from its serialized form in this 4-device
    process, runs on the sharded state and gives what the live program gives. (Loaded onto
    every device by default, it would ask for one shard of each argument per device.)"""
    run = four[1]
    key = programs.program_key(run.trainer, run.runs.num_runs, "evaluate")
    loaded = compile_cache.load_stored("evaluate", key)
    assert loaded is not None
    stored, info = loaded
    assert info.source == compile_cache.STORE_DIR
    layout = run.trainer.layout
    i = layout.put(np.int32(TINY.num_batches - 1), layout.replicated)
    got, want = stored(run.states, i), run.programs.evaluate(run.states, i)
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
        np.testing.assert_array_equal(gather(a), gather(b))


def test_the_host_s_evaluation_of_a_job_on_a_mesh(four):
    """``evaluate_cpu`` of the 4-device job (its abstract states carry the mesh's shardings;
    the program takes the parts it reads on the host's CPU) gives what the job's sharded
    ``evaluate`` program gives, for three batches' keys."""
    run = four[1]
    progs = programs.build_programs(run.trainer, run.runs.num_runs, need=("evaluate_cpu",))
    assert progs.init is progs.evaluate is None and progs.evaluate_cpu is not None
    evaluator = host_eval.MjxCpuEvaluator(run.trainer, 1, program=progs.evaluate_cpu)
    states, layout = run.states, run.trainer.layout
    actor, stats, keys = jax.device_get((states.params.actor, states.obs_stats,
                                         states.eval_key))
    for i in range(3):
        want = jax.device_get(run.programs.evaluate(states, layout.put(np.int32(i),
                                                                       layout.replicated)))
        got = evaluator(actor, stats, keys, i)
        np.testing.assert_array_equal(got.eval_steps, want.eval_steps)
        np.testing.assert_array_equal(got.eval_return, want.eval_return)


# --- 3. checkpoints across device counts ---------------------------------------------------
def _first_checkpoint_only(src_run_dir, dst):
    """A copy of a run directory cut back to its step-1 checkpoint (as if stopped there)."""
    shutil.copytree(src_run_dir, dst)
    ck = os.path.join(dst, "checkpoints")
    for step in checkpoint.steps(ck):
        if step != 1:
            shutil.rmtree(os.path.join(ck, str(step)))
    assert checkpoint.steps(ck) == [1]
    return str(dst)


@pytest.mark.parametrize("saved_on,resumed_on", [(4, 1), (1, 4)])
def test_resume_across_device_counts(one, four, tmp_path, saved_on, resumed_on):
    src_dir = {1: one, 4: four}[saved_on][2]
    target = {1: one, 4: four}[resumed_on][1]
    out = _first_checkpoint_only(src_dir, tmp_path / "cut")
    summary, run = runner.run_training(checkpoint.open_saved(out), out=out, devices=resumed_on)
    assert (run.trainer.layout is None) == (resumed_on == 1)
    assert summary["batch"] == [0, 1, 2]
    assert rel_diff(flat_params(run.states), flat_params(target.states)) < 1e-5


def test_restore_lays_out_over_any_mesh(one, four):
    """``evaluate.py`` restores on one device (host arrays) whatever mesh wrote the checkpoint;
    a restore onto 4 devices splits a one-device checkpoint's envs. Stored arrays are whole:
    both give the saved values bit for bit."""
    _, r1, dir1 = one
    _, r4, dir4 = four
    trainer, state, _ = checkpoint.restore_run(dir4, None, 0)
    np.testing.assert_array_equal(
        np.concatenate([np.asarray(x).ravel() for x in jax.tree_util.tree_leaves(state.params)]),
        flat_params(r4.states))
    layout = make_layout(1, TINY.num_envs, 4)
    _, states, _ = checkpoint.restore(dir1, layout=layout)
    assert states.env_state.obs.sharding.spec == layout.state_shardings(states).env_state.obs.spec
    np.testing.assert_array_equal(flat_params(states), flat_params(r1.states))
    np.testing.assert_array_equal(gather(states.env_state.obs), gather(r1.states.env_state.obs))


# --- 4. a sweep in one program == its runs one by one --------------------------------------
def test_sweep_equals_runs_one_by_one(tmp_path, one):
    sweep = parse_sweep(["lr=3e-4,1e-3", "clip_epsilon=0.1,0.2"], TINY)
    os.makedirs(tmp_path / "sweep")
    summary, run = runner.run_training(Runs(TINY, 2, sweep), out=str(tmp_path / "sweep"),
                                       devices=4, checkpoint_every=0)
    runs = run.runs
    assert runs.num_runs == 8 and run.trainer.layout.run_shards == 4
    assert [r["seed"] for r in summary["runs"]] == [0, 1] * 4
    assert [r["lr"] for r in summary["runs"]] == [3e-4] * 4 + [1e-3] * 4
    for r in range(8):
        cfg = runs.config_of(r).replace(seed=runs.seed_of(r))
        single = runner.prepare(Runs(cfg), devices=1)
        # the sweepable values and the seed are inputs: the same program as the plain run's
        assert single.programs.report().keys() == one[1].programs.report().keys()
        assert all(i.source != "compiled" for i in single.programs.infos)
        runner.train_batches(single)
        assert rel_diff(flat_params(run.states, r), flat_params(single.states)) < 1e-5, r
        np.testing.assert_allclose(summary["eval_return"][r],
                                   single.log.history["eval_return"][0], rtol=1e-4)
    ranking = summary["sweep_ranking"]
    assert sorted(row["rank"] for row in ranking) == [1, 2, 3, 4]
    finals = [row["final_eval_return"] for row in ranking]
    assert finals == sorted(finals, reverse=True)
    assert os.path.exists(tmp_path / "sweep" / "curves.png")


def test_the_sweep_ranking_leaves_out_seeds_that_failed():
    """A point's numbers are the mean over its seeds that trained to the end (each seed's
    own last evaluation, not all cut to the failed seed's), and a point with a failed seed
    ranks after those without; a point whose seeds all failed has none; the table says
    how many failed."""
    from ppo_jax.cli.train import _ranking_table

    runs = Runs(TINY, 2, [{"lr": 1e-4}, {"lr": 3e-4}, {"lr": 1e-3}])
    ev = [[50, 100], [50, 110],  # point 0: both seeds to the end
          [50, 900], [60],  # point 1: seed 1 stopped at NaN after its first evaluation
          [70], []]  # point 2: both stopped
    rows = {r["point"]: r for r in runner.sweep_ranking(runs, ev, [None, None, None, 1, 1, 0])}
    assert (rows[0]["final_eval_return"], rows[0]["seeds"], rows[0]["rank"]) == (105.0, 2, 1)
    assert (rows[1]["final_eval_return"], rows[1]["best_eval_return"]) == (900.0, 900.0)
    assert (rows[1]["seeds"], rows[1]["failed_seeds"], rows[1]["rank"]) == (1, 1, 2)
    assert rows[2]["final_eval_return"] is None and rows[2]["failed_seeds"] == 2
    assert rows[2]["rank"] == 3
    table = _ranking_table(sorted(rows.values(), key=lambda r: r["rank"]), 2).splitlines()
    assert table[0].endswith("| failed seeds") and table[2].endswith("| 900.0 (of 1) | 0.0 | "
                                                                     "900.0 | 1")


def test_sweep_refuses_fields_that_shape_the_program():
    with pytest.raises(ValueError, match="num_envs: only fields that leave"):
        parse_sweep(["num_envs=2,4"], TINY)
    with pytest.raises(ValueError, match="no such PPOConfig field"):
        parse_sweep(["learning_rate=1"], TINY)
    with pytest.raises(ValueError, match="given twice"):
        parse_sweep(["lr=1e-4", "lr=2e-4"], TINY)
    with pytest.raises(ValueError, match="clip_epsilon must be > 0"):
        parse_sweep(["clip_epsilon=0.1,-1"], TINY)
    with pytest.raises(ValueError, match=r"repeated value in '1e-4,1.0000000001e-4' \(equal in "
                                         r"float32, the precision the programs train in\)"):
        parse_sweep(["lr=1e-4,1.0000000001e-4"], TINY)  # two identical runs, labelled alike
    assert parse_sweep([], TINY) == [{}]
    assert Runs(TINY, 3, parse_sweep(["gamma=0.9,0.99"], TINY)).num_runs == 6


def test_a_sweep_given_as_points_is_checked_as_the_flag_is():
    """``fit(sweep=[...])`` and ``Runs``: the same refusals as ``--sweep`` (a field that shapes
    the program or none of PPOConfig's, a value that is not a number or makes an invalid
    config), and a point given twice, or two that train the same config (float32 rounds their
    values alike; a point naming the config's own value); the values are taken as floats, as
    the flag's."""
    for sweep, words in (
            ([{"num_envs": 2}], "num_envs: only fields that leave"),
            ([{"hidden_sizes": (64, 64)}], "hidden_sizes: only fields that leave"),
            ([{"seed": 0}, {"seed": 1}], "seed: only fields that leave"),
            ([{"bogus": 1}], "bogus: no such PPOConfig field"),
            ([{"lr": "1e-3"}], "lr must be a number"),
            ([{"lr": True}], "lr must be a number"),
            ([{"lr": 1e-3}, {"lr": 0.001}], "lr=0.001 is given twice"),
            ([{"lr": 1e-3}, {"lr": 1.0000000001e-3}], "the points lr=0.001 and "
                                                       "lr=0.0010000000001 train the same config"),
            ([{}, {"lr": TINY.lr}], "the points base config and lr=0.0003 train the same"),
            ([{"gamma": 0.9}, {"gamma": 0.9, "lr": TINY.lr}], "train the same config"),
            ([{"clip_epsilon": -1.0}], "clip_epsilon must be > 0"),
            ({"lr": [1e-4, 3e-4]}, "sweep must be a list of dicts"),
            (["lr=1e-4"], "each point must be a dict")):
        with pytest.raises(ValueError, match=words):
            Runs(TINY, 1, sweep)
    with pytest.raises(ValueError) as e:  # a whole array for one point: one line, cut short
        Runs(TINY, 1, [{"lr": np.logspace(-5, -3, 40)}])
    assert "lr must be a number (one per point)" in str(e.value) and "\n" not in str(e.value)
    assert len(str(e.value)) < 200
    runs = Runs(TINY, 2, [{"lr": 1}, {"lr": np.float32(3e-4), "gamma": jnp.asarray(0.9)}])
    assert runs.sweep == [{"lr": 1.0}, {"lr": float(np.float32(3e-4)),
                                        "gamma": float(jnp.asarray(0.9))}]
    assert runs.num_runs == 4 and all(type(v) is float for p in runs.sweep for v in p.values())
    assert runs.configs[1].gamma == runs.sweep[1]["gamma"] and runs.configs[0].lr == 1.0
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="num_seeds must be a whole number"):
            Runs(TINY, bad)


# --- 5. bad device counts -------------------------------------------------------------------
def test_device_counts_that_do_not_split_name_the_valid_ones():
    with pytest.raises(LayoutError) as e:
        choose_devices(3, 1, 4)
    msg = str(e.value)
    assert "nearest valid --num-envs: 3 or 6" in msg and "valid --devices here: 1, 2, 4" in msg
    with pytest.raises(LayoutError, match="sees 4 device"):
        choose_devices(8, 1, 4)
    assert choose_devices(None, 1, 4) == 1  # CPU "devices" share the cores: one by default
    assert choose_devices("all", 8, 1) == 4  # 8 runs: 4 rows of runs
    assert choose_devices(3, 3, 1) == 3  # 3 runs on 3 devices: K need not divide 4


@pytest.mark.parametrize("env,overrides", [
    ("InvertedDoublePendulum-v4", {}),  # the tutorial
    ("InvertedDoublePendulum-v4", dict(num_envs=64, frames_per_batch=1024, total_frames=4096,
                                       minibatch_size=256)),
    ("HalfCheetah-v4", dict(hidden_sizes=(32, 16), num_envs=8, frames_per_batch=400)),
])
def test_the_least_bytes_of_a_run_are_a_lower_bound(env, overrides):
    """What a job is refused on is never more than a run holds: the parameters, Adam's
    state and one collected batch, as the programs shape them."""
    trainer = make_train(PPOConfig(env=env, **overrides))
    state = programs.state_shapes(trainer, 1)
    one = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), state)
    _, batch = jax.eval_shape(trainer.collect, one.params, one.obs_stats, one.env_state,
                              jax.ShapeDtypeStruct((2,), jnp.uint32))
    nbytes = lambda t: sum(x.size * x.dtype.itemsize for x in jax.tree_util.tree_leaves(t))
    bound = trainer.least_bytes_per_run()
    assert nbytes((one.params, one.opt_state)) + nbytes(batch) >= bound
    assert bound > 0.9 * nbytes((one.params, one.opt_state))  # and not a trivial one


def test_a_job_that_cannot_fit_is_refused_before_it_starts():
    from ppo_jax.run.parallel import MemoryNeedError, check_fits

    gb = (10**9, "each GPU")
    check_fits(100, 10**7, 1, memory=gb, platform="gpu")  # 1 GB: fits exactly
    with pytest.raises(MemoryNeedError, match=r"^101 run\(s\) over 1 device\(s\) need at least "
                       r"1.01 GB on each \(10 MB a run: .*\), more than each GPU has \(1 GB\)"):
        check_fits(101, 10**7, 1, memory=gb, platform="gpu")
    check_fits(400, 10**7, 4, memory=gb, platform="gpu")  # spread over 4 devices
    with pytest.raises(MemoryNeedError, match="over 4 device"):
        check_fits(401, 10**7, 4, memory=gb, platform="gpu")
    # the CPU's "devices" share the host's memory: more of them do not help
    host = (10**9, "the host")
    with pytest.raises(MemoryNeedError, match="more than the host has"):
        check_fits(400, 10**7, jax.local_device_count(), memory=host, platform="cpu")
    # a process of a multi-process job holds its own devices' share
    n = jax.local_device_count()
    check_fits(100 * 2, 10**7, 2 * n, memory=host, platform="cpu")  # 1 GB here: fits
    with pytest.raises(MemoryNeedError, match=f"this process's share of {2 * n} devices"):
        check_fits(100 * 2 + 2, 10**7, 2 * n, memory=host, platform="cpu")
    assert issubclass(MemoryNeedError, LayoutError)  # the CLI's one line for layouts
    limit, what = parallel.device_memory()
    assert limit > 10**8 and what == "the host"  # this CPU's physical memory


def test_cli_bad_scale_out_flags_give_one_line(tmp_path):
    cases = [
        (["--devices", "3"], "valid --devices here: 1, 2, 4"),
        (["--devices", "none"], "--devices must be a positive count or 'all'"),
        (["--sweep", "num_envs=2,4"], "--sweep num_envs: only fields"),
        (["--sweep", "lr"], "expected FIELD=V1,V2"),
        (["--num-processes", "2", "--process-id", "2", "--coordinator", "127.0.0.1:1"],
         "--process-id must be in [0, 1]"),
        (["--num-processes", "2"], "missing: --coordinator, --process-id"),
    ]
    for i, (flags, expected) in enumerate(cases):
        with pytest.raises(cli.CLIError) as e:
            train_cmd.main([*TINY_FLAGS, "--out", str(tmp_path / str(i)), *flags])
        assert expected in str(e.value) and "\n" not in str(e.value), flags


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(devices: int) -> dict:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _train_process(args, devices=2):
    return subprocess.Popen([sys.executable, "-m", "ppo_jax.cli.train", *args],
                            env=_env(devices), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _one_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("timeout", ["nan", "inf", "0", "-3"])
def test_a_timeout_that_is_no_number_of_seconds_is_refused(timeout):
    """Checked before JAX joins anything (``nan`` once read as "within nan s")."""
    import argparse

    from ppo_jax.run import distributed

    p = argparse.ArgumentParser()
    distributed.add_flags(p)
    args = p.parse_args(["--coordinator", "127.0.0.1:1", "--num-processes", "2",
                         "--process-id", "0", "--distributed-timeout", timeout])
    with pytest.raises(distributed.DistributedError,
                       match="--distributed-timeout must be a number of seconds > 0"):
        distributed.initialize(args, die=pytest.fail)


def test_unreachable_coordinator_gives_one_line(tmp_path):
    port = _free_port()
    p = _train_process([*TINY_FLAGS, "--out", str(tmp_path / "r"), "--coordinator",
                        f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", "1",
                        "--distributed-timeout", "3"])
    out, err = p.communicate(timeout=120)
    assert p.returncode == 1
    assert "unreachable within 3 s" in _one_line(err)


def test_missing_or_mismatched_processes_give_one_line(tmp_path):
    """Process 0 of a declared 2-process job waits in vain (the other says it is 1 of 3, and
    the coordinator refuses it): both end with one line, not JAX's fatal stack trace."""
    port = _free_port()
    common = [*TINY_FLAGS, "--out", str(tmp_path / "r"), "--coordinator", f"127.0.0.1:{port}",
              "--distributed-timeout", "8"]
    p0 = _train_process([*common, "--num-processes", "2", "--process-id", "0"])
    p2 = _train_process([*common, "--num-processes", "3", "--process-id", "2"])
    _, err2 = p2.communicate(timeout=120)
    _, err0 = p0.communicate(timeout=120)
    assert p0.returncode == 1 and p2.returncode == 1
    assert "could not reach all 2 processes within 8 s" in _one_line(err0)
    assert "distributed runtime failed" in _one_line(err2)
    assert not os.path.exists(tmp_path / "r" / "metrics.json")


def test_a_job_whose_out_another_process_writes_is_refused_in_every_process(tmp_path):
    """Process 0 holds the job's --out (its others share it): where another process writes
    a run there, every process of the job ends with its one line, not process 0 alone
    while the others compile and wait for it at the next barrier."""
    from ppo_jax.run.run_dir import held

    port = _free_port()
    out = tmp_path / "r"
    out.mkdir()
    common = [*TINY_FLAGS, "--out", str(out), "--coordinator", f"127.0.0.1:{port}",
              "--num-processes", "2", "--distributed-timeout", "60"]
    with held(str(out)):
        procs = [_train_process([*common, "--process-id", str(i)]) for i in range(2)]
        try:
            errs = [p.communicate(timeout=300)[1] for p in procs]
        finally:
            for p in procs:
                p.kill()
    for p, err in zip(procs, errs):
        assert p.returncode == 2, err[-3000:]
        assert f"{out} is being written by another process" in _one_line(err)
    assert os.listdir(out) == []


# --- 2. two processes, one job --------------------------------------------------------------
@pytest.mark.slow  # two processes compile the same programs side by side on 2 cores
def test_two_processes_form_one_job(tmp_path, one, compile_cache_dir):
    port = _free_port()
    out = tmp_path / "job"
    common = [*TINY_FLAGS, "--out", str(out), "--coordinator", f"127.0.0.1:{port}",
              "--num-processes", "2", "--devices", "all", "--no-progress", "--no-video",
              "--checkpoint-every", "1", "--compile-cache-dir", compile_cache_dir,
              "--distributed-timeout", "120"]
    procs = [_train_process([*common, "--process-id", str(i)]) for i in range(2)]
    results = []
    try:
        for p in procs:
            results.append(p.communicate(timeout=900))
    finally:
        for p in procs:
            p.kill()
    for p, (o, e) in zip(procs, results):
        assert p.returncode == 0, e[-3000:]
    digests = [line.split()[-1] for o, _ in results for line in o.splitlines()
               if "final parameters sha256" in line]
    assert len(digests) == 2 and digests[0] == digests[1]
    assert "process 0 of 2: 2 local of 4 devices" in results[0][0]
    assert "process 1 of 2: 2 local of 4 devices" in results[1][0]
    # one writer: process 0's metrics; checkpoints written by both, readable on one device
    import json

    with open(out / "metrics.json") as f:
        summary = json.load(f)
    assert summary["layout"].startswith("4 devices")
    _, state, meta = checkpoint.restore_run(str(out), None, 0)
    assert meta["batches_done"] == 3 and checkpoint.steps(str(out / "checkpoints")) == [1, 2, 3]
    job = np.concatenate([np.asarray(x).ravel()
                          for x in jax.tree_util.tree_leaves(state.params)])
    assert rel_diff(job, flat_params(one[1].states)) < 1e-5
    np.testing.assert_allclose(summary["eval_return"], one[0]["eval_return"], rtol=1e-4)
