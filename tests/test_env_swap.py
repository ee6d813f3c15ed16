"""Swapping the env: an env of the user's own through the Python API, a Gymnasium port beside
the pendulum through every command (train, evaluate in both simulators, video, TorchRL export),
and what bad env input gets (one line each)."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ppo_jax import PPOConfig, load_policy, make_train
from ppo_jax.run import checkpoint
from ppo_jax.envs import EnvError, check_env, make_env
from tests.helpers import assert_one_line_error, run, train

# restore / load_policy of a run of an env of one's own, without the env object
NOT_REGISTERED = (r"'PointMass-v0' is not one ppo_jax registers \(a run of an env of your "
                  r"own: restore or load_policy it with env=, the env object\)")


def readme_block(root_dir: str) -> str:
    """The README's "An env of your own" code block."""
    text = open(os.path.join(root_dir, "README.md")).read()
    start = text.index("### An env of your own")
    block = text.index("```python", start) + len("```python")
    return text[block:text.index("```", block)]


@pytest.fixture(scope="module")
def own_env_run(tmp_path_factory, root_dir):
    """The README's example, run as written (in a scratch directory): its namespace."""
    cwd = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("own"))
    try:
        ns = {"__name__": "readme_example"}
        exec(compile(readme_block(root_dir), "README.md", "exec"), ns)
        ns["out"] = os.path.abspath("runs/pointmass")
    finally:
        os.chdir(cwd)
    return ns


@pytest.fixture(scope="module")
def PointMass(own_env_run):
    return own_env_run["PointMass"]


def test_own_env_trains_through_the_api(own_env_run, PointMass):
    out, states, metrics = own_env_run["out"], own_env_run["states"], own_env_run["metrics"]
    assert metrics["env_id"] == "PointMass-v0" and metrics["config"]["env"] == "PointMass-v0"
    assert states.obs_stats.loc.shape == (1, 2)
    assert all(np.all(np.isfinite(np.asarray(x)))
               for x in jax.tree_util.tree_leaves(states.params))
    assert int(states.batches_done[0]) == 3
    # its checkpoint restores with the env object, and refuses without it (one line)
    trainer, restored, _ = checkpoint.restore(out, env=PointMass())
    assert trainer.env.env_id == "PointMass-v0" and trainer.bounds is not None
    with pytest.raises(checkpoint.CheckpointError, match=NOT_REGISTERED):
        checkpoint.restore(out)

    class Wider(PointMass):  # the same id and sizes, other bounds: another policy
        action_low, action_high = np.array([-20.0], np.float32), np.array([20.0], np.float32)

    with pytest.raises(checkpoint.CheckpointError,
                       match=r"action bounds \[-2.0\] .. \[2.0\], this env has \[-20.0\]"):
        checkpoint.restore(out, env=Wider())


def test_an_older_own_env_checkpoint_with_a_config_time_limit_restores(own_env_run, PointMass,
                                                                         tmp_path):
    """Checkpoints written before an env object's time limit was checked against the
    config's (they record no action bounds) ran with the env's own limit: they restore so,
    whatever limit their config names; a newer checkpoint naming another limit is refused."""
    import glob
    import json
    import shutil

    out = str(tmp_path / "old")
    shutil.copytree(own_env_run["out"], out)

    def rewrite(drop_bounds: bool) -> None:
        for path in glob.glob(os.path.join(out, "checkpoints", "*", "meta", "metadata")):
            meta = json.load(open(path))
            meta["config"]["max_episode_steps"] = 10
            if drop_bounds:
                meta.pop("action_low"), meta.pop("action_high")
            json.dump(meta, open(path, "w"))

    rewrite(drop_bounds=False)
    with pytest.raises(checkpoint.CheckpointError, match="max_episode_steps=10 cannot apply"):
        checkpoint.restore_run(out, env=PointMass())
    rewrite(drop_bounds=True)
    trainer, _, _ = checkpoint.restore_run(out, env=PointMass())
    assert trainer.env.max_episode_steps == 50 and trainer.config.max_episode_steps == 0


def test_own_env_run_loads_as_a_policy_and_is_not_written_over(own_env_run, PointMass):
    """``load_policy(env=)`` takes the env object as ``restore`` does, and acts as training's
    evaluation; observations of the wrong size and a mode that is not deterministic are
    refused in a line; ``fit`` refuses an ``out`` that holds a run, as the command does."""
    from ppo_jax import fit
    from ppo_jax.core.acting import policy_action
    from ppo_jax.core.normalization import normalize

    out = own_env_run["out"]
    with pytest.raises(checkpoint.CheckpointError, match=NOT_REGISTERED):
        load_policy(out)
    policy = load_policy(out, env=PointMass())
    trainer, state, _ = checkpoint.restore_run(out, env=PointMass())
    obs = np.array([[0.5, -0.2], [-1.0, 0.3], [0.0, 0.0]], np.float64)
    want = policy_action(trainer.actor_apply, state.params.actor,
                         normalize(state.obs_stats, jnp.asarray(obs, jnp.float32)),
                         jax.random.PRNGKey(0), trainer.config.eval_action, trainer.bounds)
    got = policy(obs)
    assert got.dtype == np.float32 and got.shape == (3, 1)
    np.testing.assert_allclose(got, np.asarray(want), rtol=1e-6)  # jitted vs eager: 1 ulp
    single = policy(obs[1].tolist())  # a list, one observation: the same program as an array
    np.testing.assert_array_equal(single, policy(obs[1]))
    # A batch of one and a batch of three are different XLA programs (the matmuls' kernels
    # follow the row count), so a row may differ by rounding: on an AMD EPYC host by 1.2e-7
    # here, and up to 4.8e-7 for the pendulum's policy over 300 random observations (4 ulps
    # of its bound, 1); 2e-6 is 8 ulps of this env's bound, 2.
    np.testing.assert_allclose(single, got[1], rtol=0, atol=2e-6)
    assert np.all(np.abs(got) <= 2.0)
    for bad in (np.zeros(3), np.zeros((4, 1)), 0.5):
        with pytest.raises(ValueError, match=r"observations of shape \[2\], or a batch of "
                                             r"them \[\.\.\., 2\]"):
            policy(bad)
    for mode in ("sample", "bogus"):  # refused before the checkpoint is read
        with pytest.raises(ValueError, match="deterministic policy: mode must be one of"):
            load_policy(out, mode=mode)
    with open(os.path.join(out, "metrics.json")) as f:
        before = f.read()
    with pytest.raises(ValueError, match="already holds a run") as e:
        fit(PPOConfig.from_preset("tiny").replace(seed=7), env=PointMass(), out=out)
    # the command cannot build an env object: the API continues it
    assert "resume(out, env=...)" in str(e.value) and "--resume" not in str(e.value)
    with open(os.path.join(out, "metrics.json")) as f:
        assert f.read() == before


def test_a_stopped_run_of_an_own_env_resumes_through_the_api(own_env_run, PointMass,
                                                              tmp_path):
    """``scripts/train.py --resume`` cannot build an env object: ``resume(out, env=...)``
    continues a stopped run of an env of one's own from its latest checkpoint, bit-identical
    to the run that was not stopped (the README's, 3 batches); a finished one is returned as
    it is, nothing written; wrong arguments are one line before anything is read."""
    import json
    import shutil

    from ppo_jax import fit, resume

    out = str(tmp_path / "stopped")

    class Stop(Exception):
        pass

    def stop_after_batch_1(i, m, ev):
        if i == 1:
            raise Stop

    with pytest.raises(Stop):
        fit(PPOConfig.from_preset("tiny"), env=PointMass(), out=out, checkpoint_every=1,
            on_batch=stop_after_batch_1)
    with pytest.raises(checkpoint.CheckpointError, match=NOT_REGISTERED):
        resume(out)
    # what the command refuses before compiling, resume refuses too (its files as they were)
    broken = str(tmp_path / "broken")
    shutil.copytree(out, broken)
    with open(os.path.join(broken, "metrics.json"), "w") as f:
        f.write('{"cut off')
    with pytest.raises(ValueError, match="the checkpoints are intact: move it away"):
        resume(broken, env=PointMass())
    shutil.copy(os.path.join(out, "metrics.json"), os.path.join(broken, "metrics.json"))
    os.makedirs(os.path.join(broken, "checkpoints", "99"))
    with pytest.raises(ValueError, match="99 is not a checkpoint but is named like one"):
        resume(broken, env=PointMass())
    seen = []
    states, metrics = resume(os.path.join(out, "checkpoints"), env=PointMass(),
                             on_batch=lambda i, m, ev: seen.append(i))
    assert seen[-1] == 2 and 0 < seen[0] <= 2
    want = own_env_run["metrics"]
    for key in ("batch", "reward", "eval_return", "eval_steps"):
        assert metrics[key] == want[key], key
    assert metrics["written_by"] == "resume"
    for a, b in zip(jax.tree_util.tree_leaves(states.params),
                    jax.tree_util.tree_leaves(own_env_run["states"].params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with open(os.path.join(out, "metrics.json")) as f:
        written = f.read()
    assert json.loads(written)["eval_return"] == want["eval_return"]
    again, finished = resume(out, env=PointMass())  # finished: as it is
    assert finished["eval_return"] == want["eval_return"]
    for a, b in zip(jax.tree_util.tree_leaves(again.params),
                    jax.tree_util.tree_leaves(states.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with open(os.path.join(out, "metrics.json")) as f:
        assert f.read() == written
    with pytest.raises(ValueError, match="checkpoint_every must be a whole number >= 0"):
        resume(out, env=PointMass(), checkpoint_every=-1)
    with pytest.raises(TypeError, match="tensorboard must be True or False, got 'x'"):
        resume(out, env=PointMass(), tensorboard="x")
    with pytest.raises(TypeError, match="out must be a path"):
        resume(3)
    with pytest.raises(checkpoint.CheckpointError):
        resume(str(tmp_path / "no run here"), env=PointMass())


def test_resume_chooses_the_device_before_jax_starts(own_env_run, root_dir):
    """``resume(device=...)`` (a fresh process): the device is chosen from the checkpoint's
    metadata before anything starts JAX's backends, as ``fit`` and ``--resume`` do; where
    reading the checkpoint came first, JAX had started on the GPU, ``device="cpu"`` was
    refused and ``"auto"`` resumed a CPU run of few envs there."""
    import subprocess
    import sys

    code = (
        "import json, sys\n"
        "from jax._src import xla_bridge\n"
        "from ppo_jax.run import runner\n"
        "seen = []\n"
        "real = runner._choose_device\n"
        "def probe(*args):\n"
        "    seen.append((xla_bridge.backends_are_initialized(), args[:3]))\n"
        "    return real(*args)\n"
        "runner._choose_device = probe\n"
        "sys.path.insert(0, sys.argv[2])\n"
        "from tests.test_env_swap import readme_block\n"
        "ns = {'__name__': 'readme_example'}\n"
        "src = readme_block(sys.argv[2]).split('states, metrics = fit(')[0]\n"
        "exec(src, ns)\n"
        "runner.resume(sys.argv[1], env=ns['PointMass'](), device='cpu')\n"
        "print(json.dumps(seen))\n")
    out = subprocess.run([sys.executable, "-c", code, own_env_run["out"], root_dir],
                         capture_output=True, text=True, timeout=600, cwd=root_dir)
    assert out.returncode == 0, out.stderr[-2000:]
    import json

    assert json.loads(out.stdout.strip().splitlines()[-1]) == [[False, ["cpu", 1, 4]]]


def test_bounded_actions_reach_the_env():
    """The tanh-Normal is mapped onto the env's bounds: the sampled and evaluation actions of
    a [-3, 3] env leave [-1, 1]."""
    trainer = make_train(PPOConfig.from_preset("tiny", env="InvertedPendulum-v4"))
    assert trainer.bounds is not None and trainer.bounds.low == (-3.0,)
    params = trainer.init_params(jax.random.PRNGKey(0))
    params = jax.tree_util.tree_map(lambda x: x * 0, params)
    # loc = 0, scale = softplus(0)-based: samples spread over the whole [-3, 3]
    from ppo_jax.core.normalization import ObsNormStats

    stats = ObsNormStats(loc=jnp.zeros(4), scale=jnp.ones(4))
    policy = trainer.policy(params.actor, stats, "sample")
    acts = jax.vmap(lambda k: policy(jnp.zeros(4), k))(jax.random.split(jax.random.PRNGKey(1), 500))
    acts = np.asarray(acts)
    assert acts.min() >= -3.0 and acts.max() <= 3.0 and np.abs(acts).max() > 1.0


def test_every_port_meets_the_protocol():
    """``make_env`` trusts the ports (the protocol check traces reset and step, ~1 s a
    build): this is where each is checked."""
    from ppo_jax.envs.registry import PORTS

    for env_id in PORTS:
        env = make_env(env_id)
        assert check_env(env) is env and env.env_id == env_id


def test_protocol_violations_get_one_line(PointMass):
    class NoSpec(PointMass):
        spec = None

    class WrongObs(PointMass):
        observation_size = 3

    class IntReward(PointMass):
        def step(self, state, action):
            return super().step(state, action).replace(reward=jnp.int32(0))

    with pytest.raises(EnvError, match="missing spec"):
        check_env(NoSpec())
    with pytest.raises(EnvError, match=r"obs is float32\[2\], expected floating\[3\]"):
        check_env(WrongObs())
    with pytest.raises(EnvError, match="reward is int32"):
        check_env(IntReward())
    assert issubclass(EnvError, ValueError)  # the commands' one-line errors catch it

    class HugeBounds(PointMass):  # finite in float64, not in float32
        action_low, action_high = np.array([-1e39]), np.array([1e39])

    class WideBounds(PointMass):  # each finite in float32, their range not
        action_low, action_high = np.array([-3e38], np.float32), np.array([3e38], np.float32)

    class HalfReward(PointMass):  # reset's reward float16, step's float32
        def reset(self, key):
            return super().reset(key).replace(reward=jnp.zeros((), jnp.float16))

    class MoreData(PointMass):  # step's state holds a leaf that reset's does not
        def reset(self, key):
            s = super().reset(key)
            return s.replace(data={"x": s.data})

        def step(self, state, action):
            s = super().step(state.replace(data=state.data["x"]), action)
            return s.replace(data={"x": s.data, "cost": action[0] ** 2})

    class TupleKeySpec(PointMass):  # JSON cannot key by a tuple
        def spec(self):
            return {"dt": 0.1, "gains": {("hip", 0): 2.0}}

    class MixedKeySpec(PointMass):  # nor sort 1 beside "dt" (the key is sorted)
        def spec(self):
            return {"dt": 0.1, 1: "a"}

    class FailingSpec(PointMass):
        def spec(self):
            raise RuntimeError("no model loaded\nsecond line")

    class IntKeysAlone(PointMass):  # what JSON holds (as "0", "1"), and a value it has not
        def spec(self):
            return {"dt": 0.1, "gains": {0: 1.0, 1: 2.0}, "mask": np.ones(2)}

    assert check_env(IntKeysAlone()).spec()["gains"] == {0: 1.0, 1: 2.0}
    refused = r"spec\(\) must return what JSON holds with its keys sorted \(it keys the "
    for env, words in ((HugeBounds(), "finite in float32"), (WideBounds(), "finite in float32"),
                       (TupleKeySpec(), refused + ".*keys must be str, int, float, bool or "
                                                  "None, not tuple$"),
                       (MixedKeySpec(), refused + ".*'<' not supported between instances"),
                       (FailingSpec(), r"spec\(\) raised RuntimeError: no model loaded$"),
                       (HalfReward(), r"reward is float16\[\] after reset but float32\[\] after "
                                      "step"),
                       (MoreData(), r"another structure than reset's \(only step's has "
                                    r"\.data\['cost'\]\)")):
        with pytest.raises(EnvError, match=words):
            check_env(env)
    with pytest.raises(EnvError, match="missing env_id"):  # fit checks before it reads one
        from ppo_jax import fit

        fit(PPOConfig.from_preset("tiny"), env=object())
    with pytest.raises(ValueError, match="max_episode_steps=10 cannot apply to the env object"):
        make_train(PPOConfig.from_preset("tiny", max_episode_steps=10), env=PointMass())
    assert make_train(PPOConfig(max_episode_steps=50), env=PointMass()).env.max_episode_steps == 50


def test_a_constant_observation_entry_is_noted_at_start(PointMass):
    """An observation entry that never varies, at a nonzero value (a mass, gravity): under
    TorchRL's statistics its normalized value is rounding residue, which the start-up says
    once, with the cure; with ``--obs-norm safe`` it is centred, and nothing is said."""
    from ppo_jax import fit

    class WithGravity(PointMass):
        env_id, observation_size = "PointMassG-v0", 3

        def reset(self, key):
            s = super().reset(key)
            return s.replace(obs=jnp.append(s.obs, 9.81))

        def step(self, state, action):
            s = super().step(state, action)
            return s.replace(obs=jnp.append(s.obs, 9.81))

    tiny = PPOConfig.from_preset("tiny", total_frames=200)
    for mode, noted in (("reference", True), ("safe", False)):
        said = []
        states, _ = fit(tiny.replace(obs_norm=mode), env=WithGravity(), announce=said.append)
        notes = [m for m in said if m.startswith("note: ")]
        assert len(notes) == int(noted), said
        if noted:
            assert notes[0].startswith("note: 1 observation entry (2) hardly varied")
            assert "--obs-norm safe" in notes[0]
        assert (float(states.obs_stats.scale[0, 2]) == 1.0) is not noted


def test_a_state_of_python_scalars_and_without_done_runs(PointMass):
    """The protocol asks for the five fields and nothing more: a state class of its own
    without ``done``, and a ``reset`` that returns Python scalars, step, reset and run whole
    episodes as an ``EnvState`` does."""
    from flax import struct

    from ppo_jax.core.acting import run_episode
    from ppo_jax.envs.vector import VectorEnv

    @struct.dataclass
    class Plain:
        data: jax.Array
        obs: jax.Array
        reward: jax.Array
        terminated: jax.Array
        truncated: jax.Array
        steps: jax.Array

    class PlainEnv(PointMass):
        def reset(self, key):
            s = super().reset(key)
            return Plain(s.data, s.obs, 0.0, False, False, 0)

        def step(self, state, action):
            s = super().step(state, action)
            return Plain(s.data, s.obs, s.reward, s.terminated, s.truncated, s.steps)

    plain, reference = check_env(PlainEnv()), PointMass()
    key = jax.random.PRNGKey(3)
    policy = lambda obs, k: -obs[:1]  # noqa: E731  (a feedback law that ends no episode)
    got = jax.jit(lambda k: run_episode(plain, policy, k, 60))(key)
    want = jax.jit(lambda k: run_episode(reference, policy, k, 60))(key)
    assert int(got.length) == int(want.length) == 50
    assert float(got.episode_return) == float(want.episode_return)
    vec = VectorEnv(plain, 3)
    state, out = jax.jit(vec.step)(vec.reset(key), jnp.zeros((3, 1)), key)
    assert out.reward.shape == (3,) and state.obs.shape == (3, 2)


def test_unknown_env_lists_the_valid_ones(root_dir, tmp_path):
    with pytest.raises(ValueError, match="valid: InvertedDoublePendulum-v4, .*brax:NAME, "
                                         "playground:NAME"):
        make_env("Humanoid-v4")
    assert_one_line_error(run(root_dir, "train.py", "--env", "Nope-v0", "--out",
                              str(tmp_path / "x")), words="unknown env 'Nope-v0'; valid:")
    assert_one_line_error(run(root_dir, "train.py", "--env", "brax:nope", "--out",
                              str(tmp_path / "y")), words="brax's envs: ant")
    assert not os.path.exists(tmp_path / "x")


def test_missing_extra_names_it(monkeypatch):
    import builtins

    real = builtins.__import__

    def no_playground(name, *a, **k):
        if name.startswith("mujoco_playground"):
            raise ImportError(name)
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_playground)
    with pytest.raises(ValueError, match=r"^the env playground:CartpoleBalance needs the "
                                         r"optional package 'playground': pip install -e "
                                         r"'\.\[playground\]'$"):  # (no flag: fit has none)
        make_env("playground:CartpoleBalance")


@pytest.fixture(scope="module")
def pendulum_run(tmp_path_factory, compile_cache_dir, tiny_flags):
    """A tiny InvertedPendulum-v4 run (bounds [-3, 3]) made by the CLI."""
    out = str(tmp_path_factory.mktemp("ip") / "run")
    assert train(*tiny_flags, "--env", "InvertedPendulum-v4", "--out", out,
                 cache=compile_cache_dir) == 0
    return out


def test_port_evaluates_in_both_sims(pendulum_run, capsys, compile_cache_dir):
    from ppo_jax.cli import evaluate

    assert evaluate.main([pendulum_run, "--sim", "both", "--episodes", "2", "--json",
                          "--compile-cache-dir", compile_cache_dir]) == 0
    import json

    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["steps"] == out["mujoco"]["steps"]  # the same episodes in MJX and MuJoCo C
    np.testing.assert_allclose(out["mean_return"], out["mujoco"]["mean_return"], rtol=1e-3)
    policy = load_policy(pendulum_run)
    assert policy(np.zeros(4)).shape == (1,)


def test_env_flag_that_contradicts_the_checkpoint(pendulum_run, root_dir, monkeypatch,
                                                  compile_cache_dir):
    assert_one_line_error(run(root_dir, "evaluate.py", pendulum_run, "--env", "Hopper-v4"),
                          words="contradicts the checkpoint")
    from ppo_jax.cli import common as cli, evaluate

    def no_restore(*args, **kwargs):
        raise AssertionError("restored before --env was checked")

    monkeypatch.setattr(checkpoint, "restore_run", no_restore)
    with pytest.raises(cli.CLIError, match="trained on InvertedPendulum-v4"):
        evaluate.main([pendulum_run, "--env", "Hopper-v4",  # refused on the metadata alone
                       "--compile-cache-dir", compile_cache_dir])
    assert_one_line_error(run(root_dir, "train.py", "--resume", pendulum_run, "--env",
                              "Hopper-v4"), words="contradict")


def test_a_port_built_with_other_arguments_is_not_restored_as_the_registered_one(
        pendulum_run, tmp_path):
    """A run trained on a port object built with other arguments (a time limit, a frame
    skip) names the registered id: rebuilt from the registry, it was evaluated, resumed and
    exported on another env, silently. The metadata holds the env's spec and class; the
    registry's env must match them, or the restore (evaluate.py, --resume, export, restore,
    load_policy without env=) is refused in one line."""
    import glob
    import json
    import shutil

    from ppo_jax.run.programs import spec_json

    _, _, meta = checkpoint.restore_run(pendulum_run)
    assert meta["env_spec"] == spec_json(make_env("InvertedPendulum-v4"))
    assert meta["env_class"] == "ppo_jax.envs.inverted_pendulum.InvertedPendulum"
    out = str(tmp_path / "run")
    shutil.copytree(pendulum_run, out)

    def rewrite(**changes):
        for path in glob.glob(os.path.join(out, "checkpoints", "*", "meta", "metadata")):
            m = json.load(open(path))
            for k, v in changes.items():
                if v is None:
                    m.pop(k, None)
                else:
                    m[k] = v
            json.dump(m, open(path, "w"))

    spec = dict(meta["env_spec"])
    rewrite(env_spec=dict(spec, frame_skip=4, max_episode_steps=5))
    with pytest.raises(checkpoint.CheckpointError, match=(
            r"'InvertedPendulum-v4' was trained with other settings than the registered one's: "
            r"frame_skip 4 \(registered: 2\), max_episode_steps 5 \(registered: 1000\) "
            r"\(restore or load_policy it with env=, the env object it was trained on\)")):
        load_policy(out)
    # with the env object it was trained on, or one the user chooses: as given
    trainer, _, _ = checkpoint.restore_run(
        out, env=make_env("InvertedPendulum-v4", max_episode_steps=5))
    assert trainer.env.max_episode_steps == 5
    # a setting only one side names (another ppo_jax version's) is not compared
    rewrite(env_spec=dict(spec, a_later_setting=1))
    checkpoint.restore_run(out)
    rewrite(env_class="my_envs.ShapedPendulum")  # a class of the user's own, of that id
    with pytest.raises(checkpoint.CheckpointError,
                       match=r"trained as a my_envs.ShapedPendulum, not the one ppo_jax"):
        checkpoint.restore_run(out)
    rewrite(env_class=None, env_spec=None)  # written before the metadata held them
    checkpoint.restore_run(out)


def test_a_numpy_integer_size_is_saved_as_a_plain_one(own_env_run, PointMass, tmp_path):
    """An env whose sizes are numpy integers (which the protocol takes) trained to its end,
    then could not save: its metadata is JSON."""
    trainer, states, _ = checkpoint.restore(own_env_run["out"], env=PointMass())
    trainer.env.observation_size, trainer.env.action_size = np.int64(2), np.int32(1)
    directory = str(tmp_path / "checkpoints")
    checkpoint.save(directory, trainer, states)
    _, _, meta = checkpoint.restore(directory, env=PointMass())
    assert (meta["observation_size"], meta["action_size"]) == (2, 1)


def test_port_video(pendulum_run, rendering, tmp_path):
    from ppo_jax.eval import render

    trainer, state, _ = checkpoint.restore_run(pendulum_run)
    path = render.write_policy_video(trainer, state, str(tmp_path / "ip.gif"), max_steps=5)
    assert path and os.path.getsize(path) > 0


def test_port_torchrl_export_keeps_the_bounds(pendulum_run, tmp_path):
    pytest.importorskip("torchrl")
    from ppo_jax.cli import export_torchrl

    out = str(tmp_path / "ip.pt")
    assert export_torchrl.main([pendulum_run, out]) == 0
    import torch

    d = torch.load(out, weights_only=False)
    assert d["meta"]["env_id"] == "InvertedPendulum-v4"
    assert d["meta"]["action_low"] == [-3.0] and d["meta"]["action_high"] == [3.0]


def reset_and_step(env):
    """A reset and one zero-action step, to be compiled as one program."""
    return lambda key: env.step(env.reset(key), jnp.zeros(env.action_size))


def test_brax_env_adapter_steps():
    env = make_env("brax:inverted_pendulum")
    s2 = jax.jit(reset_and_step(env))(jax.random.PRNGKey(0))
    assert s2.obs.shape == (env.observation_size,) and int(s2.steps) == 1
    assert s2.truncated.dtype == jnp.bool_ and not bool(s2.truncated)


def test_a_library_s_model_writes_no_mujoco_log(tmp_path, monkeypatch, capfd):
    """brax's half_cheetah.xml uses ``<compiler settotalmass>``, which MuJoCo deprecates: its
    notice is left out (no line on stderr, no ``MUJOCO_LOG.TXT`` in the working directory);
    any other MuJoCo warning while a library loads its model comes as a Python warning, and
    MuJoCo's handler is the previous one afterwards."""
    import warnings

    import mujoco

    from ppo_jax.envs.base import mujoco_warnings_as_python

    monkeypatch.chdir(tmp_path)
    capfd.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        env = make_env("brax:halfcheetah")
    assert env.observation_size == 17 and env.mj_model.nbody == 8
    assert "settotalmass" not in capfd.readouterr().err
    assert not [w for w in caught if "settotalmass" in str(w.message)]
    assert not os.path.exists(tmp_path / "MUJOCO_LOG.TXT")
    model = mujoco.MjModel.from_xml_string(
        '<mujoco><worldbody><body><joint type="hinge"/><geom size=".1"/></body></worldbody>'
        '</mujoco>')
    data = mujoco.MjData(model)
    data.qvel[0] = np.nan
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with mujoco_warnings_as_python():
            mujoco.mj_step(model, data)
    assert [str(w.message)[:41] for w in caught] == ["MuJoCo: Nan, Inf or huge value in QVEL at"]
    assert mujoco.get_mju_user_warning() is None
    assert not os.path.exists(tmp_path / "MUJOCO_LOG.TXT")


def test_playground_env_adapter_steps():
    """A DM Control Suite task through MuJoCo Playground (the optional extra CI installs):
    its done is termination, the time limit is ours, action repeat and episode length are in
    its spec."""
    pytest.importorskip("mujoco_playground")
    env = make_env("playground:CartpoleBalance")
    spec = env.spec()
    assert spec["action_repeat"] == 1 and spec["episode_length"] == 1000
    assert env.max_episode_steps == 1000 and env.observation_size == 5
    s2 = jax.jit(reset_and_step(env))(jax.random.PRNGKey(0))
    assert s2.obs.shape == (5,) and s2.obs.dtype == jnp.float32 and int(s2.steps) == 1
    assert not bool(s2.terminated) and not bool(s2.truncated) and float(s2.reward) > 0
