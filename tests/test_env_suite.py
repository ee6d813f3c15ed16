"""Parity of the Gymnasium MuJoCo ports (ppo_jax.envs) with Gymnasium's own v4 envs (MuJoCo C).

For each port, under x64, from states that Gymnasium's env itself visits under random actions
(so they include floor contacts and the steps that terminate):

* one step from identical synced states (``set_state`` / ``reset_to``) and actions: obs,
  reward and terminated agree within 1e-6;
* 20-step trajectories from the same start states, without re-synchronising, within 1e-6;
* the reset distribution's moments match Gymnasium's resets.

Each env compiles two programs per precision (a vmapped ``reset_to`` and a vmapped ``step``),
shared by its tests. The pendulum's own, deeper parity tests are tests/test_env_parity.py.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

gym = pytest.importorskip("gymnasium")

from ppo_jax.envs import PORTS, make_env  # noqa: E402

SUITE = [e for e in PORTS if e != "InvertedDoublePendulum-v4"]
N_STATES, N_TRAJ, T_TRAJ = 24, 8, 20


def gym_env(env_id):
    env = gym.make(env_id).unwrapped
    env.reset(seed=0)
    return env


def random_actions(rng, env, shape):
    low, high = env.action_low, env.action_high
    return rng.uniform(low, high, shape + (env.action_size,))


@functools.lru_cache(maxsize=None)
def visited_states(env_id):
    """``(qpos, qvel, contact)`` of N_STATES states that Gymnasium's env visits under random
    actions: spread over random-action episodes, each episode's last state (at or just past
    the termination boundary) included."""
    genv = gym_env(env_id)
    ours = make_env(env_id)
    rng = np.random.default_rng(0)
    pool = []
    genv.reset(seed=1)
    for _ in range(1500):
        q, v = genv.data.qpos.copy(), genv.data.qvel.copy()
        pool.append((q, v, genv.data.ncon > 0))
        _, _, term, _, _ = genv.step(random_actions(rng, ours, ()))
        if term:
            pool.append((genv.data.qpos.copy(), genv.data.qvel.copy(), genv.data.ncon > 0))
            genv.reset(seed=int(rng.integers(1 << 30)))
    idx = np.linspace(0, len(pool) - 1, N_STATES).astype(int)
    pick = [pool[i] for i in idx]
    return (np.array([p[0] for p in pick]), np.array([p[1] for p in pick]),
            np.array([p[2] for p in pick]))


class Programs:
    """The two jitted programs of one env at one precision."""

    def __init__(self, env_id):
        self.env = make_env(env_id)
        self.reset_to = jax.jit(jax.vmap(self.env.reset_to))
        self.step = jax.jit(jax.vmap(self.env.step))


_programs = {}


def programs(env_id) -> Programs:
    key = (env_id, jax.config.jax_enable_x64)
    if key not in _programs:
        _programs[key] = Programs(env_id)
    return _programs[key]


def gym_step(genv, q, v, a):
    genv.set_state(q, v)
    obs, r, term, _, _ = genv.step(np.asarray(a, np.float64))
    return obs, r, term


@pytest.mark.parametrize("env_id", SUITE)
def test_one_step_parity_x64(env_id, x64):
    p = programs(env_id)
    genv = gym_env(env_id)
    qpos, qvel, contact = visited_states(env_id)
    rng = np.random.default_rng(2)
    err_obs = err_rew = 0.0
    mismatch = terminated = 0
    for _ in range(3):
        actions = random_actions(rng, p.env, (N_STATES,))
        out = p.step(p.reset_to(jnp.asarray(qpos), jnp.asarray(qvel)), jnp.asarray(actions))
        obs, rew, term = jax.device_get((out.obs, out.reward, out.terminated))
        for i in range(N_STATES):
            g_obs, g_r, g_term = gym_step(genv, qpos[i], qvel[i], actions[i])
            err_obs = max(err_obs, float(np.abs(obs[i] - g_obs).max()))
            err_rew = max(err_rew, abs(float(rew[i]) - g_r))
            mismatch += bool(term[i]) != g_term
            terminated += g_term
    assert err_obs < 1e-6 and err_rew < 1e-6, (err_obs, err_rew)
    assert mismatch == 0
    if "healthy_reward" in p.env.params:  # Hopper, Walker2d: the boundary is covered
        assert terminated > 0 and contact.any(), "the states must include contact and termination"
    if p.env.env_id == "InvertedPendulum-v4":
        assert terminated > 0


@pytest.mark.parametrize("env_id", SUITE)
def test_trajectory_parity_x64(env_id, x64):
    p = programs(env_id)
    genv = gym_env(env_id)
    qpos, qvel, _ = visited_states(env_id)
    qpos, qvel = qpos[:N_TRAJ], qvel[:N_TRAJ]
    rng = np.random.default_rng(3)
    actions = random_actions(rng, p.env, (T_TRAJ, N_TRAJ))
    state = p.reset_to(jnp.asarray(qpos), jnp.asarray(qvel))
    ours = []
    for t in range(T_TRAJ):
        state = p.step(state, jnp.asarray(actions[t]))
        ours.append(jax.device_get((state.obs, state.reward, state.terminated)))
    worst = 0.0
    for i in range(N_TRAJ):
        genv.set_state(qpos[i], qvel[i])
        for t in range(T_TRAJ):
            obs, r, term, _, _ = genv.step(actions[t, i])
            worst = max(worst, float(np.abs(ours[t][0][i] - obs).max()),
                        abs(float(ours[t][1][i]) - r))
            assert bool(ours[t][2][i]) == term, (i, t)
            if term:
                break
    assert worst < 1e-6, worst


@pytest.mark.parametrize("env_id", SUITE)
def test_reset_moments_match_gymnasium(env_id):
    env = make_env(env_id)
    n = 2000
    s = jax.jit(jax.vmap(env.reset))(jax.random.split(jax.random.PRNGKey(0), n))
    ours = np.concatenate([np.asarray(s.data.qpos), np.asarray(s.data.qvel)], axis=1)
    genv = gym_env(env_id)
    theirs = []
    for i in range(n):
        genv.reset(seed=i)
        theirs.append(np.concatenate([genv.data.qpos, genv.data.qvel]))
    theirs = np.array(theirs)
    spread = np.maximum(theirs.std(0), 1e-12)
    np.testing.assert_array_less(np.abs(ours.mean(0) - theirs.mean(0)), 6 * spread / np.sqrt(n) + 1e-12)
    np.testing.assert_allclose(ours.std(0), theirs.std(0), rtol=0.1, atol=1e-12)
    # the observation of a reset state is the observation Gymnasium computes for it
    genv.set_state(np.asarray(s.data.qpos[0], np.float64), np.asarray(s.data.qvel[0], np.float64))
    np.testing.assert_allclose(np.asarray(s.obs[0]), genv._get_obs(), atol=1e-5)
