"""Parity of the MJX env with Gymnasium's InvertedDoublePendulum-v4 (MuJoCo C).

From identical (qpos, qvel) and actions: obs, reward and terminated per step agree within
1e-6 under x64 (measured here: ~1e-12), for random start states that include the cart
pressing on the rail limit (nonzero qfrc_constraint) and falling poles (terminations).
Whole trajectories (no re-synchronisation) agree within 1e-6 for the first 20 steps under
x64. Under float32 the per-step error is ~1e-5 relative on the angles and velocities (the
float32 RK4 step), asserted at 1e-3 absolute (obs) and 1e-3 (reward).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

gym = pytest.importorskip("gymnasium")

from ppo_jax.envs import ENV_ID, InvertedDoublePendulum  # noqa: E402

N_STATES, N_STEPS = 24, 40


def start_states(seed):
    """Random start states: v4 resets, cart near/over the rail limits, fast and tilted poles."""
    rng = np.random.default_rng(seed)
    qpos = rng.uniform(-0.1, 0.1, (N_STATES, 3))
    qvel = rng.normal(0, 0.1, (N_STATES, 3))
    k = N_STATES // 3
    qpos[:k, 0] = rng.choice([-1, 1], k) * rng.uniform(0.95, 1.02, k)  # at the rail
    qvel[:k, 0] = np.sign(qpos[:k, 0]) * rng.uniform(0.5, 3, k)  # pushing into it
    qpos[k : 2 * k, 1:] = rng.uniform(-0.6, 0.6, (k, 2))  # tilted: terminates soon
    qvel[k : 2 * k] = rng.normal(0, 1.0, (k, 3))
    return qpos, qvel


def gym_env():
    env = gym.make(ENV_ID).unwrapped
    env.reset(seed=0)
    return env


def gym_step(env, qpos, qvel, action):
    env.set_state(qpos, qvel)
    obs, reward, terminated, _, _ = env.step(np.asarray(action, np.float64))
    return obs, reward, terminated, env.data.qpos.copy(), env.data.qvel.copy()


def per_step_errors(env, dtype):
    """Max abs differences (obs, reward) and terminated mismatches, re-synchronised each step."""
    genv = gym_env()
    step_from = jax.jit(jax.vmap(lambda q, v, a: env.step(env.reset_to(q, v), a)))
    qpos, qvel = start_states(0)
    rng = np.random.default_rng(1)
    err_obs = err_rew = 0.0
    term_mismatch = terminations = constrained = 0
    for _ in range(N_STEPS):
        actions = rng.uniform(-1, 1, (N_STATES, 1))
        k = N_STATES // 3  # keep pushing the rail group into its limit
        actions[:k, 0] = np.sign(qpos[:k, 0]) * rng.uniform(0.3, 1.0, k)
        ours = step_from(jnp.asarray(qpos, dtype), jnp.asarray(qvel, dtype), jnp.asarray(actions, dtype))
        ours = jax.device_get((ours.obs, ours.reward, ours.terminated))
        nq, nv = [], []
        for i in range(N_STATES):
            obs, r, term, q, v = gym_step(genv, qpos[i], qvel[i], actions[i])
            err_obs = max(err_obs, float(np.abs(ours[0][i] - obs).max()))
            err_rew = max(err_rew, abs(float(ours[1][i]) - r))
            term_mismatch += bool(ours[2][i]) != term
            terminations += term
            constrained += bool(np.any(obs[8:] != 0))
            if term:  # restart a fallen pendulum from a fresh v4-like state
                q = rng.uniform(-0.1, 0.1, 3)
                v = rng.normal(0, 0.1, 3)
            nq.append(q)
            nv.append(v)
        qpos, qvel = np.array(nq), np.array(nv)
    return err_obs, err_rew, term_mismatch, terminations, constrained


def test_per_step_parity_x64(x64):
    env = InvertedDoublePendulum()
    err_obs, err_rew, mismatch, terminations, constrained = per_step_errors(env, jnp.float64)
    assert terminations > 10, "the test must cover terminations"
    assert constrained > 10, "the test must cover nonzero constraint forces"
    assert mismatch == 0
    assert err_obs < 1e-6, err_obs
    assert err_rew < 1e-6, err_rew


@pytest.mark.gpu
def test_per_step_parity_float32():
    env = InvertedDoublePendulum()
    err_obs, err_rew, mismatch, terminations, _ = per_step_errors(env, jnp.float32)
    assert err_obs < 1e-3, err_obs
    assert err_rew < 1e-3, err_rew
    # float32 may flip a termination only when the tip is within ~1e-6 of height 1
    assert mismatch <= 1


def test_trajectory_parity_x64(x64):
    env = InvertedDoublePendulum()
    genv = gym_env()
    qpos, qvel = start_states(2)
    rng = np.random.default_rng(3)
    actions = rng.uniform(-1, 1, (20, N_STATES, 1))
    state = jax.jit(jax.vmap(env.reset_to))(jnp.asarray(qpos), jnp.asarray(qvel))
    step = jax.jit(jax.vmap(env.step))
    alive = np.ones(N_STATES, bool)
    for i in range(N_STATES):
        genv.set_state(qpos[i], qvel[i])
    gstates = [(qpos[i], qvel[i]) for i in range(N_STATES)]
    worst = 0.0
    for t in range(20):
        state = step(state, jnp.asarray(actions[t]))
        ours, ours_term = np.asarray(state.obs), np.asarray(state.terminated)
        for i in range(N_STATES):
            if not alive[i]:
                continue
            obs, r, term, q, v = gym_step(genv, *gstates[i], actions[t, i])
            gstates[i] = (q, v)
            worst = max(worst, float(np.abs(ours[i] - obs).max()))
            assert bool(ours_term[i]) == term
            alive[i] = not term
    assert worst < 1e-6, worst


def test_reset_distribution_matches_v4():
    env = InvertedDoublePendulum()
    n = 4000
    s = jax.jit(jax.vmap(env.reset))(jax.random.split(jax.random.PRNGKey(0), n))
    dq = np.asarray(s.data.qpos) - env.mj_model.qpos0
    qv = np.asarray(s.data.qvel)
    # v4: qpos = qpos0 + U(-0.1, 0.1), qvel = 0.1 N(0, 1)
    assert np.all(np.abs(dq) <= 0.1)
    np.testing.assert_allclose(dq.mean(0), 0.0, atol=4 * 0.0577 / np.sqrt(n))
    np.testing.assert_allclose(dq.std(0), 0.1 / np.sqrt(3), rtol=0.05)
    np.testing.assert_allclose(qv.mean(0), 0.0, atol=4 * 0.1 / np.sqrt(n))
    np.testing.assert_allclose(qv.std(0), 0.1, rtol=0.05)
    # and Gymnasium's own resets have the same moments
    genv = gym.make(ENV_ID).unwrapped
    g = []
    for i in range(1000):
        genv.reset(seed=i)
        g.append(np.concatenate([genv.data.qpos - genv.init_qpos, genv.data.qvel]))
    g = np.array(g)
    np.testing.assert_allclose(g[:, :3].std(0), dq.std(0), rtol=0.1)
    np.testing.assert_allclose(g[:, 3:].std(0), qv.std(0), rtol=0.1)
