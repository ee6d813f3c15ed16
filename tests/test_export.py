"""Export to TorchRL (scripts/export_torchrl.py, ppo_jax.interop.torchrl.export): the tutorial's modules and
env load the file and TorchRL's rollout on GymEnv("InvertedDoublePendulum-v4") scores what
ppo_jax's MuJoCo C evaluation scores from the same start state; export -> load round trips
exactly; bad input is one line."""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchrl")

from ppo_jax.run import checkpoint  # noqa: E402
from ppo_jax.eval import evaluate
from ppo_jax.interop.torchrl import export
from ppo_jax.envs import mujoco_c
from ppo_jax.cli.common import CLIError  # noqa: E402


@pytest.fixture(scope="module")
def export_script(root_dir):
    from ppo_jax.cli import export_torchrl

    return export_torchrl


@pytest.fixture(scope="module")
def restored(tiny_run):
    trainer, states, meta = checkpoint.restore(tiny_run)
    return trainer, jax.tree_util.tree_map(lambda x: x[0], states)


@pytest.fixture(scope="module")
def exported(tiny_run, export_script, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("export") / "policy.pt")
    assert export_script.main([tiny_run, out]) == 0
    return out


def test_file_layout(exported):
    d = torch.load(exported, weights_only=True)
    assert d["format"] == export.FORMAT
    assert {k: tuple(v.shape) for k, v in d["actor"].items()} == export.expected_shapes(11, (16, 16), 2)
    assert set(d["critic"]) == {"0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"}
    assert d["obs_norm"]["loc"].dtype == torch.float64 and not bool(d["obs_norm"]["standard_normal"])
    assert d["meta"]["hidden_sizes"] == [16, 16] and d["meta"]["source"]["step"] == 3


def test_round_trip_is_exact(exported, restored):
    trainer, state = restored
    params, stats = export.load_torchrl_export(exported, trainer.config)
    for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(state.params)):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(state.params)
    np.testing.assert_array_equal(stats.loc, state.obs_stats.loc)
    np.testing.assert_array_equal(stats.scale, state.obs_stats.scale)


def torchrl_episode(path, seed):
    """The README's lines: the tutorial's env and modules load the export; one
    deterministic rollout from the env's reset. Returns (return, steps, qpos0, qvel0)."""
    from torchrl.envs.utils import ExplorationType, set_exploration_type

    from ppo_jax.envs import ENV_ID
    from ppo_jax.interop.torchrl.reference import tutorial_env, tutorial_modules

    env = tutorial_env(ENV_ID, seed=seed)
    env.transform[0].init_stats(num_iter=1000, reduce_dim=0, cat_dim=0)  # the tutorial's call
    m = tutorial_modules(11, 1, (16, 16), spec=env.action_spec)
    d = torch.load(path, weights_only=True)
    m.actor_net.load_state_dict(d["actor"])
    m.value_net.load_state_dict(d["critic"])
    env.transform[0].load_state_dict(d["obs_norm"])
    td = env.reset()
    data = env.base_env._env.unwrapped.data
    qpos, qvel = data.qpos.copy(), data.qvel.copy()
    with set_exploration_type(ExplorationType.DETERMINISTIC), torch.no_grad():
        rollout = env.rollout(1000, m.policy, auto_reset=False, tensordict=td)
    rewards = rollout["next", "reward"].double()
    return float(rewards.sum()), rewards.numel(), qpos, qvel


def test_torchrl_rollout_scores_as_mujoco_c(exported, restored):
    trainer, state = restored
    env = mujoco_c.MujocoCEnv()
    # TorchRL's DETERMINISTIC action of a TanhNormal is tanh(loc): ppo_jax's "tanh_loc"
    policy = evaluate.make_host_policy(trainer.actor_apply, state.params.actor,
                                       state.obs_stats, "tanh_loc")
    for seed in (0, 1, 2):
        ret, steps, qpos, qvel = torchrl_episode(exported, seed)
        ours = evaluate.mujoco_episode(env, policy, qpos, qvel, 1000)
        assert ours.length == steps
        np.testing.assert_allclose(ret, ours.episode_return, rtol=1e-6)  # measured ~1e-8


def test_not_an_export(tmp_path, restored):
    cfg = restored[0].config
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    other = tmp_path / "other.pt"
    torch.save({"actor": {}}, other)
    for path, words in [(text, "not a ppo_jax TorchRL export"), (other, "marker"),
                        (tmp_path / "missing.pt", "no such file")]:
        with pytest.raises(export.ExportError) as e:
            export.load_torchrl_export(str(path), cfg)
        assert words in str(e.value) and "\n" not in str(e.value)


def test_shapes_that_do_not_fit(exported, restored):
    cfg = restored[0].config
    with pytest.raises(export.ExportError) as e:
        export.load_torchrl_export(exported, cfg.replace(hidden_sizes=(32, 32)))
    assert "0.weight has shape (16, 11)" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(export.ExportError) as e:
        export.load_torchrl_export(exported, cfg.replace(hidden_sizes=(16, 16, 16)))
    assert "entries" in str(e.value) and "\n" not in str(e.value)


def test_entries_that_are_not_tensors(exported, restored, tmp_path):
    """An export whose marker is right but whose entries are not state dicts of tensors:
    one line naming the entry."""
    cfg = restored[0].config
    for part, change, words in [("actor", {"0.weight": [1.0, 2.0]}, "actor 0.weight is a list"),
                                ("critic", None, "export has no 'critic' state dict")]:
        d = torch.load(exported, weights_only=False)
        d[part] = {**d[part], **change} if change else change
        path = tmp_path / f"{part}.pt"
        torch.save(d, path)
        with pytest.raises(export.ExportError) as e:
            export.load_torchrl_export(str(path), cfg)
        assert words in str(e.value) and "\n" not in str(e.value)


def test_cli_bad_inputs(export_script, tiny_run, tmp_path):
    with pytest.raises(CLIError) as e:
        export_script.main([str(tmp_path / "nope"), str(tmp_path / "x.pt")])
    assert "no such checkpoint directory" in str(e.value)
    with pytest.raises(CLIError) as e:
        export_script.main([tiny_run, "/proc/forbidden/x.pt"])
    assert "cannot write" in str(e.value)
    with pytest.raises(CLIError):
        export_script.main([tiny_run, str(tmp_path / "x.pt"), "--run-index", "1"])


def test_a_failed_write_leaves_the_old_file(exported, tmp_path):
    """A write that fails part-way (here a file-size limit, as a full disk does) is one line
    and leaves an existing file whole: torch.save wrote into the file itself, which then
    held a truncated export (and a RuntimeError's traceback)."""
    import resource
    import shutil

    path = tmp_path / "policy.pt"
    shutil.copy(exported, path)
    before = path.read_bytes()
    assert len(before) > 4096
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))  # (Python ignores SIGXFSZ)
    try:
        with pytest.raises(export.ExportError, match=f"^cannot write {path}: File too large$"):
            export.save(torch.load(exported, weights_only=True), str(path))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["policy.pt"]


def test_without_torch_one_line_and_exit(root_dir, tmp_path):
    fake = tmp_path / "fake" / "torch"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('torch is not installed here')\n")
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "fake"))
    p = subprocess.run([sys.executable, os.path.join(root_dir, "scripts", "export_torchrl.py"),
                        str(tmp_path / "run"), str(tmp_path / "x.pt")],
                       capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 2, p.stderr[-2000:]
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "install the torchrl extra" in lines[0], p.stderr[-2000:]
    assert not os.path.exists(tmp_path / "x.pt")


def test_init_from_torchrl_starts_from_the_export(exported, restored):
    """``train.py --init-from-torchrl``'s path: the run starts from the export's networks and
    normalization statistics, exactly."""
    from ppo_jax.run import runner

    trainer, state = restored
    init_from = export.load_torchrl_export(exported, trainer.config)
    from ppo_jax.run.runs import Runs

    run = runner.prepare(Runs(trainer.config), init_from=init_from)
    for a, b in zip(jax.tree_util.tree_leaves(run.states.params),
                    jax.tree_util.tree_leaves(state.params)):
        np.testing.assert_array_equal(a[0], b)
    np.testing.assert_array_equal(run.states.obs_stats.scale[0], state.obs_stats.scale)
    np.testing.assert_array_equal(run.states.obs_stats.loc[0], state.obs_stats.loc)


def test_a_run_started_from_torchrl_says_so(exported, tiny_run, tmp_path, tiny_flags,
                                            compile_cache_dir):
    """What a run's networks started from was recorded nowhere: ``metrics.json`` says it
    (``init_from``: ``torchrl:`` and the file's path; null for a fresh start), and a resumed
    run's still does (the checkpoints record it)."""
    import json
    import shutil

    from ppo_jax.cli import train
    from ppo_jax.run import checkpoint

    assert json.load(open(os.path.join(tiny_run, "metrics.json")))["init_from"] is None
    out = str(tmp_path / "run")
    assert train.main([*tiny_flags, "--init-from-torchrl", exported, "--out", out,
                       "--checkpoint-every", "1", "--no-video", "--no-progress",
                       "--compile-cache-dir", compile_cache_dir]) == 0
    want = f"torchrl:{os.path.abspath(exported)}"
    assert json.load(open(os.path.join(out, "metrics.json")))["init_from"] == want
    shutil.rmtree(os.path.join(out, "checkpoints", "3"))  # as if stopped after batch 1
    assert checkpoint.open_saved(out).meta["init_from"] == want
    assert train.main(["--resume", out, "--no-video", "--no-progress",
                       "--compile-cache-dir", compile_cache_dir]) == 0
    assert json.load(open(os.path.join(out, "metrics.json")))["init_from"] == want


def test_init_from_torchrl_refuses_running_statistics(exported, restored):
    """A TorchRL start carries fixed statistics: ``--obs-norm running``, which keeps their
    moments, refuses it in one line rather than inventing the moments."""
    from ppo_jax.core.train import make_train
    from ppo_jax.run import runner

    trainer, _ = restored
    init_from = export.load_torchrl_export(exported, trainer.config)
    running = make_train(trainer.config.replace(obs_norm="running"))
    with pytest.raises(runner.InitFromError, match="obs_norm 'running'"):
        runner.check_init_from(running, init_from)


def test_init_from_torchrl_bad_file(tmp_path, tiny_run, compile_cache_dir):
    from ppo_jax.cli import train

    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(CLIError, match="--init-from-torchrl"):
        train.main(["--init-from-torchrl", str(bad), "--out", str(tmp_path / "run"),
                    "--compile-cache-dir", compile_cache_dir])


def test_a_torchrl_start_loads_exactly(tmp_path):
    """A TorchRL run's start (the tutorial's modules and initialized ObservationNorm, as
    the benchmark's --matched saves it) loads into ppo_jax's networks and statistics, with
    the sizes from its meta: the same actor outputs and normalized observations."""
    from ppo_jax.config import PPOConfig
    from ppo_jax.core.train import make_train
    from ppo_jax.interop.torchrl import reference as ref

    torch.manual_seed(3)
    env = ref.tutorial_env("InvertedPendulum-v4", seed=3)
    ref.init_obs_norm(env.transform[0], 200)
    spec = env.action_spec
    m = ref.tutorial_modules(4, 1, (8, 8), low=spec.space.low, high=spec.space.high, spec=spec)
    path = str(tmp_path / "start.pt")
    export.save(export.from_tutorial_modules(m, env.transform[0], "InvertedPendulum-v4", (8, 8),
                                             low=spec.space.low.numpy(),
                                             high=spec.space.high.numpy()), path)
    cfg = PPOConfig(env="InvertedPendulum-v4", hidden_sizes=(8, 8))
    params, stats = export.load_torchrl_export(path, cfg)  # sizes: the file's meta
    assert export.read(path)["meta"]["action_low"] == [-3.0]
    obs = np.random.default_rng(0).normal(size=(5, 4))
    with torch.no_grad():
        theirs = env.transform[0](env.observation_spec.rand().set(
            "observation", torch.as_tensor(obs, dtype=torch.float32)))["observation"].float().numpy()
        loc, scale = m.actor_net(torch.as_tensor(theirs))
    np.testing.assert_allclose(obs * np.asarray(stats.scale) + np.asarray(stats.loc), theirs,
                               rtol=1e-5, atol=1e-5)
    trainer = make_train(cfg)
    ours_loc, ours_scale = trainer.actor.apply(params.actor, theirs)
    np.testing.assert_allclose(ours_loc, loc.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours_scale, scale.numpy(), rtol=1e-5, atol=1e-6)


def test_init_from_another_envs_start_is_one_line(exported, tmp_path, capsys):
    """An export of the pendulum (11 observations) given to a HalfCheetah run: one line
    naming both envs, before anything compiles, and no run directory; one that claims
    HalfCheetah with the pendulum's sizes: one line naming both sizes. An export of another
    env whose sizes fit (HalfCheetah-v4 and Walker2d-v4 both have 17 and 6) is refused too:
    its statistics are another env's."""
    from ppo_jax.cli import train
    from ppo_jax.config import PPOConfig
    from ppo_jax.run import runner

    def relabeled(env_id):
        d = torch.load(exported, weights_only=True)
        d["meta"]["env_id"] = env_id
        path = str(tmp_path / f"{env_id}.pt")
        torch.save(d, path)
        return path

    argv = ["--env", "HalfCheetah-v4", "--hidden-sizes", "16", "16", "--out",
            str(tmp_path / "run"), "--no-compile-cache", "--init-from-torchrl"]
    with pytest.raises(CLIError, match=r"--init-from-torchrl: .*policy.pt holds networks and "
                                       r"statistics of InvertedDoublePendulum-v4, not of "
                                       r"HalfCheetah-v4, which this run trains"):
        train.main(argv + [exported])
    with pytest.raises(CLIError, match=r"--init-from-torchrl .*HalfCheetah-v4.pt: its "
                                       r"normalization statistics are for 11 observation "
                                       r"entries; HalfCheetah-v4 has 17"):
        train.main(argv + [relabeled("HalfCheetah-v4")])
    assert not os.path.exists(tmp_path / "run")  # refused before anything was written
    with pytest.raises(export.ExportError, match="of Walker2d-v4, not of "
                                                 "InvertedDoublePendulum-v4"):
        export.load_torchrl_export(relabeled("Walker2d-v4"), PPOConfig(hidden_sizes=(16, 16)))
    params, stats = export.load_torchrl_export(exported, PPOConfig(hidden_sizes=(16, 16)))
    from ppo_jax.core.train import make_train

    with pytest.raises(runner.InitFromError, match=r"network entry .* has shape \(16,\); the "
                                                   r"config's networks on .* need \(32,\)"):
        runner.check_init_from(make_train(PPOConfig(hidden_sizes=(32, 32))), (params, stats))
    with pytest.raises(runner.InitFromError, match="another structure"):
        runner.check_init_from(make_train(PPOConfig(hidden_sizes=(16, 16, 16))), (params, stats))
