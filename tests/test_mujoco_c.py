"""MuJoCo C evaluation (ppo_jax.envs.mujoco_c): v4's semantics (bit for bit against Gymnasium's
env), agreement with the MJX env from identical start states, and a trained policy scoring
the same in both simulators.

Measured (2-core CPU, 8 start states, 100 steps of random actions: the poles fall within
3-12 steps and then swing, the cart runs into the rail):
- x64: max |obs difference| 1e-14 after 10 steps, 2e-13 after 30, 1e-8 after 100 (reward
  1.4e-8): asserted at 1e-6 over all 100 steps.
- float32: 7e-6 after 10 steps, 9e-5 after 20, 3e-4 after 30, 8e-3 after 50, O(1) after
  70-100 (the fallen double pendulum is chaotic and float32's 1e-7 per-step error doubles
  every few steps): asserted at 1e-3 over the first 30 steps.
``linalg="inline"`` (the env's Cholesky solves written out, :mod:`ppo_jax.envs.linalg`) is
held to the same bounds. Measured 2026-12-05 (library / inline): x64 max over 100 steps
3.4e-8 / 6.6e-8; float32 after 10, 20, 30 steps 6.9e-6 / 2.0e-5, 1.1e-4 / 1.4e-4,
6.1e-5 / 1.9e-4 (float32's chaotic spread, not a bias: x64 shows none).
"""

import numpy as np
import pytest

import jax
import jax.numpy as jnp
import mujoco

from ppo_jax.envs import InvertedDoublePendulum
from ppo_jax.eval.evaluate import evaluate_checkpoint
from ppo_jax.envs.linalg import with_linalg
from ppo_jax.envs.mujoco_c import MujocoCEnv, default_solver_model, run_actions

E, T = 8, 100


def starts_and_actions(seed=0):
    rng = np.random.default_rng(seed)
    qpos = rng.uniform(-0.1, 0.1, (E, 3))
    qvel = rng.normal(0, 0.1, (E, 3))
    actions = rng.uniform(-1, 1, (T, E, 1))
    return qpos, qvel, actions


def mjx_rollouts(qpos, qvel, actions, dtype, linalg="library"):
    """obs ``[E, T, 11]``, reward, terminated ``[E, T]`` of the MJX env (one jitted scan;
    ``linalg``: ``PPOConfig.linalg``)."""
    env = with_linalg(InvertedDoublePendulum(), linalg)

    def roll(q, v, acts):
        def body(s, a):
            n = env.step(s, a)
            return n, (n.obs, n.reward, n.terminated)

        return jax.lax.scan(body, env.reset_to(q, v), acts)[1]

    f = jax.jit(jax.vmap(roll, in_axes=(0, 0, 1)))
    out = f(jnp.asarray(qpos, dtype), jnp.asarray(qvel, dtype), jnp.asarray(actions, dtype))
    return [np.asarray(x, np.float64) for x in out]


def max_errors(dtype, linalg="library"):
    """Max abs obs/reward differences per step ``[T]``, termination mismatches before each
    episode's first termination, and the number of steps with the cart on the rail."""
    qpos, qvel, actions = starts_and_actions()
    # start both from the same representable state
    qpos = np.asarray(jnp.asarray(qpos, dtype), np.float64)
    qvel = np.asarray(jnp.asarray(qvel, dtype), np.float64)
    obs, rew, term = mjx_rollouts(qpos, qvel, actions, dtype, linalg)
    env = MujocoCEnv()
    err_obs, err_rew = np.zeros(T), np.zeros(T)
    mismatches = constrained = 0
    for i in range(E):
        tr = run_actions(env, qpos[i], qvel[i], actions[:, i])
        err_obs = np.maximum(err_obs, np.abs(obs[i] - tr.obs[1:]).max(1))
        err_rew = np.maximum(err_rew, np.abs(rew[i] - tr.reward))
        first = int(np.argmax(tr.terminated)) if tr.terminated.any() else T - 1
        mismatches += int((term[i, : first + 1] != tr.terminated[: first + 1]).sum())
        constrained += int(np.any(tr.obs[1:, 8:] != 0, axis=1).sum())
    return err_obs, err_rew, mismatches, constrained


@pytest.mark.parametrize("linalg", ["library", "inline"])
def test_mjx_agrees_with_mujoco_c_for_100_steps_x64(x64, linalg):
    err_obs, err_rew, mismatches, constrained = max_errors(jnp.float64, linalg)
    assert constrained > 10, "the rollouts must include the cart on the rail"
    assert mismatches == 0
    assert err_obs.max() < 1e-6, err_obs[[9, 29, 99]]
    assert err_rew.max() < 1e-6, err_rew[[9, 29, 99]]


@pytest.mark.gpu
@pytest.mark.parametrize("linalg", ["library", "inline"])
def test_mjx_agrees_with_mujoco_c_float32(linalg):
    err_obs, err_rew, mismatches, _ = max_errors(jnp.float32, linalg)
    assert mismatches == 0
    assert err_obs[:30].max() < 1e-3, err_obs[[9, 19, 29]]
    assert err_rew[:30].max() < 1e-3, err_rew[[9, 19, 29]]


def test_plain_solver_defaults():
    m = default_solver_model()
    assert (m.opt.iterations, m.opt.ls_iterations, m.opt.disableflags) == (100, 50, 0)
    assert m.opt.timestep == 0.01 and m.opt.integrator == mujoco.mjtIntegrator.mjINT_RK4


def test_same_as_gymnasium_v4():
    gym = pytest.importorskip("gymnasium")
    genv = gym.make("InvertedDoublePendulum-v4")
    genv.reset(seed=0)
    g = genv.unwrapped
    env = MujocoCEnv()
    rng = np.random.default_rng(1)
    for episode in range(3):
        gobs, _ = genv.reset(seed=episode)
        obs = env.reset_to(g.data.qpos, g.data.qvel)
        np.testing.assert_array_equal(obs, gobs)
        for t in range(1000):
            a = rng.uniform(-1, 1, 1)
            gobs, grew, gterm, gtrunc, _ = genv.step(a)
            s = env.step(a)
            np.testing.assert_array_equal(s.obs, gobs)
            assert (s.reward, s.terminated, s.truncated) == (grew, gterm, gtrunc)
            if gterm or gtrunc:
                break
    # reset distribution: qpos0 + U(-0.1, 0.1), 0.1 N(0, 1)
    r = np.random.default_rng(0)

    def reset_state():
        env.reset(r)
        return np.concatenate(env.state)

    states = np.array([reset_state() for _ in range(2000)])
    assert np.all(np.abs(states[:, :3]) <= 0.1)
    np.testing.assert_allclose(states[:, :3].std(0), 0.1 / np.sqrt(3), rtol=0.1)
    np.testing.assert_allclose(states[:, 3:].std(0), 0.1, rtol=0.1)


def test_trained_policy_same_return_in_both_sims(tiny_run):
    """The tiny run's policy lets the pendulum fall within ~30 steps: the horizon over which
    float32 MJX and MuJoCo C agree to ~1e-4, so whole episodes must match."""
    out = evaluate_checkpoint(tiny_run, episodes=4, max_steps=30)
    assert out["checkpoint_step"] == 3
    assert out["mjx"]["steps"] == out["mujoco"]["steps"]
    assert all(0 < n for n in out["mujoco"]["steps"])
    np.testing.assert_allclose(out["mujoco"]["returns"], out["mjx"]["returns"], rtol=1e-4)


def test_evaluate_script_sim_flag(tiny_run, root_dir, capsys):
    import json

    from ppo_jax.cli import evaluate as evaluate_script

    # (the episodes program of the test above: same episodes, steps and policy)
    args = [tiny_run, "--episodes", "4", "--max-steps", "30"]
    assert evaluate_script.main(args + ["--sim", "both", "--json"]) == 0
    both = json.loads(capsys.readouterr().out)
    assert both["sim"] == "mjx" and len(both["returns"]) == 4
    assert both["mujoco"]["steps"] == both["steps"]
    np.testing.assert_allclose(both["mujoco"]["returns"], both["returns"], rtol=1e-4)
    assert evaluate_script.main(args + ["--sim", "mujoco", "--json"]) == 0
    alone = json.loads(capsys.readouterr().out)
    assert alone["sim"] == "mujoco" and alone["returns"] == both["mujoco"]["returns"]
    assert evaluate_script.main(args + ["--sim", "both"]) == 0
    table = capsys.readouterr().out
    assert "MJX return" in table and "MuJoCo C return" in table and "MuJoCo C: mean return" in table
    assert evaluate_script.main(args + ["--sim", "mujoco", "--eval-action", "tanh_loc", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["policy"] == "tanh_loc"
    from ppo_jax.cli.common import CLIError

    with pytest.raises(CLIError):
        evaluate_script.main(args + ["--stochastic", "--eval-action", "mean"])


def test_sim_mujoco_for_an_env_without_it_is_refused_before_any_episode(tiny_run, monkeypatch):
    """``--sim mujoco|both`` for an env with no MuJoCo C twin (``brax:``, ``playground:``):
    one line before the MJX episodes of ``both`` run, so the refusal loses no work."""
    import types

    from ppo_jax.cli import evaluate as evaluate_script
    from ppo_jax.cli.common import CLIError
    from ppo_jax.eval import evaluate
    from ppo_jax.run import checkpoint

    restore_run = checkpoint.restore_run

    def foreign(*args, **kwargs):  # the checkpoint's policy on an env that is not a port
        trainer, state, meta = restore_run(*args, **kwargs)
        env = types.SimpleNamespace(env_id="brax:reacher", max_episode_steps=1000)
        return types.SimpleNamespace(config=trainer.config, env=env), state, meta

    monkeypatch.setattr(checkpoint, "restore_run", foreign)
    ran = []
    monkeypatch.setattr(evaluate, "mjx_episodes", lambda *a, **k: ran.append(1))
    for sim in ("mujoco", "both"):
        with pytest.raises(CLIError, match="brax:reacher has no MuJoCo C simulator"):
            evaluate_script.main([tiny_run, "--episodes", "3", "--sim", sim])
    assert ran == []


def test_episodes_in_chunks_are_the_episodes_of_one_vmap(tiny_run):
    """Episodes past a chunk's width run in more chunks of one program: the same keys
    (every one in one call, as training's ``eval_episode_key`` makes them), the same
    lengths, and returns that differ only in float32 rounding. Measured on the tiny run's
    stochastic policy, 7 episodes of 50 steps, widths 1, 3 and 4 against one vmap of 7:
    lengths equal, returns differ by at most 7.6e-6 (1.1e-7 relative; a vmap's width changes
    how XLA vectorizes the step, not what it computes)."""
    from ppo_jax.core.acting import eval_episode_key
    from ppo_jax.eval import evaluate
    from ppo_jax.run import checkpoint

    trainer, state, _ = checkpoint.restore_run(tiny_run)
    keys = evaluate.episode_keys(state.eval_key, 3, 7)
    one_by_one = [np.asarray(eval_episode_key(state.eval_key, 2, j)) for j in range(7)]
    np.testing.assert_array_equal(keys, np.stack(one_by_one))
    whole = evaluate.mjx_episodes(trainer, state, keys, 50, "sample")
    seen = []
    chunked = evaluate.mjx_episodes(trainer, state, keys, 50, "sample", width=3,
                                    progress=seen.append)
    assert seen == [3, 3, 1]
    np.testing.assert_array_equal(chunked[1], whole[1])
    np.testing.assert_allclose(chunked[0], whole[0], rtol=1e-6)
    assert chunked[0].dtype == np.float64 and chunked[1].dtype == np.int32
    assert len(set(whole[0].tolist())) == 7  # 7 different episodes, none lost to the padding
    none = evaluate.mjx_episodes(trainer, state, keys[:0], 50, "sample", width=3)
    assert none[0].shape == none[1].shape == (0,)
    # typed keys (jax.random.key) are the same episodes as their raw data
    typed = jax.random.wrap_key_data(keys)
    np.testing.assert_array_equal(evaluate.mjx_episodes(trainer, state, typed, 50, "sample")[1],
                                  whole[1])
    # the width: all episodes while they fit, capped by platform and by the states' bytes
    assert evaluate.episode_width(trainer.env, 7) == 7
    assert evaluate.episode_width(trainer.env, 10**6, platform="cpu") == 1024
    assert evaluate.episode_width(trainer.env, 10**6, platform="gpu") == 16384
    state_bytes = evaluate.CHUNK_STATE_BYTES // evaluate.episode_width(
        trainer.env, 10**9, platform="gpu")
    assert 1000 < state_bytes < 20000  # the pendulum's MJX state: ~2.3 KB


def test_evaluate_command_runs_many_episodes_in_chunks(tiny_run, monkeypatch, capsys):
    """``evaluate.py --episodes`` beyond a chunk: every episode in the output, MJX and
    MuJoCo C side by side, a progress bar on stderr (none with ``--no-progress``), and only
    episode 0's MuJoCo C states kept (the rest are not needed)."""
    import json

    from ppo_jax.cli import evaluate as evaluate_script
    from ppo_jax.eval import evaluate

    monkeypatch.setitem(evaluate.WIDTH_CAP, "cpu", 3)
    kept = []
    episode = evaluate.mujoco_episode

    def counted(*args, **kw):
        ep = episode(*args, **kw)
        kept.append(len(ep.qpos))
        return ep

    monkeypatch.setattr(evaluate, "mujoco_episode", counted)
    args = [tiny_run, "--episodes", "7", "--max-steps", "30", "--sim", "both", "--json"]
    assert evaluate_script.main(args) == 0
    out, err = capsys.readouterr()
    both = json.loads(out)
    assert len(both["returns"]) == 7 and both["mujoco"]["steps"] == both["steps"]
    np.testing.assert_allclose(both["mujoco"]["returns"], both["returns"], rtol=1e-4)
    assert "episodes" in err  # the bar
    assert kept == [0] * 7  # no video: no states kept
    assert evaluate_script.main(args + ["--no-progress", "--sim", "mjx"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["returns"] == both["returns"] and err == ""
