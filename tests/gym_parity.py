"""Measuring a Gymnasium port against Gymnasium's own v4 env (MuJoCo C): the shared part of
``tests/test_parity_gymnasium_ports.py`` (which asserts it) and ``scripts/env_parity.py`` (which
prints it,
with the float32 horizon). Needs ``gymnasium[mujoco]`` (the ``test`` extra), imported here
only, on demand.

The states compared are those Gymnasium's env itself visits under uniform random actions in
the env's bounds (so they include floor contacts and the terminating steps); a port is
compared from the same synced ``(qpos, qvel)`` (Gymnasium's ``set_state``; the port's
:meth:`~ppo_jax.envs.base.MujocoEnv.state_at`, the state its reset builds) with the same
actions. Each port's measurements share one step program per precision: ``state_at`` needs
no forward pass (Reacher, whose observation reads body positions, runs MJX's kinematics).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from ppo_jax.envs.registry import make_env


def gym_env(env_id: str):
    import gymnasium as gym

    env = gym.make(env_id).unwrapped
    env.reset(seed=0)
    return env


def random_actions(rng: np.random.Generator, env, shape: tuple) -> np.ndarray:
    return rng.uniform(env.action_low, env.action_high, shape + (env.action_size,))


@functools.lru_cache(maxsize=None)
def visited_states(env_id: str, n: int = 24, steps: int = 1500, before_end: int = 3):
    """``(qpos [m, nq], qvel [m, nv], contact [m])``: ``n`` states spread over ``steps``
    random-action steps of Gymnasium's env, each episode's final state included, and the
    states that the first ``before_end`` terminating steps started from (so an env that
    rarely terminates, such as Ant, still has its termination rule compared)."""
    genv = gym_env(env_id)
    ours = make_env(env_id)
    rng = np.random.default_rng(0)
    pool, ends = [], []
    genv.reset(seed=1)
    for _ in range(steps):
        pool.append((genv.data.qpos.copy(), genv.data.qvel.copy(), genv.data.ncon > 0))
        _, _, term, _, _ = genv.step(random_actions(rng, ours, ()))
        if term:
            ends.append(len(pool) - 1)
            pool.append((genv.data.qpos.copy(), genv.data.qvel.copy(), genv.data.ncon > 0))
            genv.reset(seed=int(rng.integers(1 << 30)))
    picks = sorted(set(np.linspace(0, len(pool) - 1, n).astype(int)) | set(ends[:before_end]))
    return tuple(np.array([pool[i][k] for i in picks]) for k in range(3))


@functools.lru_cache(maxsize=None)
def self_contact_states(env_id: str, n: int = 32, seed: int = 0):
    """``(qpos [n, nq], qvel [n, nv], depth [n])``: poses of a planar walker (root joints
    ``rootx``, ``rootz``, ``rooty`` first) lifted clear of the floor, its other joints drawn in
    their ranges, in which some of its own parts touch (MuJoCo C finds a contact with no
    world geom in it; ``depth`` the deepest), half of them shallow (under 3 cm) and half
    deeper, with random velocities. Random actions in Gymnasium's env rarely lead there
    (folded legs), where a trained gait may go."""
    import mujoco

    genv = gym_env(env_id)
    model, data = genv.model, mujoco.MjData(genv.model)
    rng = np.random.default_rng(seed)
    shallow, deep = [], []
    for _ in range(100_000):
        if len(shallow) >= n // 2 and len(deep) >= n - n // 2:
            break
        q = model.qpos0.copy()
        q[1] += rng.uniform(0.3, 0.8)
        q[2] = rng.uniform(-0.3, 0.3)
        for j in range(3, model.njnt):
            q[model.jnt_qposadr[j]] = rng.uniform(*model.jnt_range[j])
        data.qpos[:], data.qvel[:] = q, 0.0
        mujoco.mj_forward(model, data)
        own = [c.dist for c in data.contact[:data.ncon]
               if model.geom_bodyid[c.geom1] and model.geom_bodyid[c.geom2]]
        if own and len(own) == data.ncon:
            pick = shallow if min(own) > -0.03 else deep
            if len(pick) < (n // 2 if pick is shallow else n - n // 2):
                pick.append((q, rng.normal(0.0, 1.0, model.nv), min(own)))
    states = shallow + deep
    assert len(states) == n, f"{env_id}: {len(states)} self-contact poses found of {n}"
    return tuple(np.array([s[k] for s in states]) for k in range(3))


def forward_qacc(env_id: str, steps: int = 1500, seed: int = 0):
    """``(capped [steps, nv], full [steps, nv])``: MJX's ``forward`` accelerations, at the
    current precision, with the port's ``solver`` options and with the MJCF's own, from the
    states Gymnasium's env visits in ``steps`` random-action steps and the actions taken
    there (so the constraint rows are those the env's own steps solve)."""
    from mujoco import mjx

    from ppo_jax.envs.base import load_asset_model

    genv, port = gym_env(env_id), make_env(env_id)
    rng = np.random.default_rng(seed)
    genv.reset(seed=seed)
    rows = []
    for t in range(steps):
        a = random_actions(rng, port, ())
        rows.append((genv.data.qpos.copy(), genv.data.qvel.copy(), a))
        if genv.step(a)[2]:
            genv.reset(seed=int(rng.integers(1 << 30)))
    qpos, qvel, ctrl = (np.array([r[k] for r in rows]) for k in range(3))

    def qacc(options):
        m = mjx.put_model(load_asset_model(port.xml, options))
        d0 = mjx.make_data(m)
        f = jax.vmap(lambda q, v, c: mjx.forward(m, d0.replace(qpos=q, qvel=v, ctrl=c)).qacc)
        return np.asarray(jax.jit(f)(qpos, qvel, ctrl))

    return qacc(tuple(port.solver)), qacc(())


class Programs:
    """A port's jitted programs at the current precision: vmapped ``state_at`` (the synced
    start state) and ``step``."""

    def __init__(self, env_id: str):
        self.env = make_env(env_id)
        self.state_at = jax.jit(jax.vmap(self.env.state_at))
        self.step = jax.jit(jax.vmap(self.env.step))


_programs: dict = {}


def programs(env_id: str) -> Programs:
    key = (env_id, bool(jax.config.jax_enable_x64))
    if key not in _programs:
        _programs[key] = Programs(env_id)
    return _programs[key]


@dataclasses.dataclass
class StepErrors:
    obs: float
    reward: float
    term_mismatch: int
    terminations: int
    contacts: int


def one_step_errors(env_id: str, rounds: int = 3, seed: int = 2, states=None) -> StepErrors:
    """Max |obs|, |reward| differences and termination mismatches of one step from each
    visited state (``rounds`` action draws), at the current precision; ``states``: other
    ``(qpos, qvel, contact)`` to start from."""
    p = programs(env_id)
    genv = gym_env(env_id)
    qpos, qvel, contact = visited_states(env_id) if states is None else states
    dtype = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
    rng = np.random.default_rng(seed)
    e = StepErrors(0.0, 0.0, 0, 0, int(contact.sum()))
    for _ in range(rounds):
        actions = random_actions(rng, p.env, (len(qpos),))
        out = p.step(p.state_at(jnp.asarray(qpos, dtype), jnp.asarray(qvel, dtype)),
                     jnp.asarray(actions, dtype))
        obs, rew, term = jax.device_get((out.obs, out.reward, out.terminated))
        for i in range(len(qpos)):
            genv.set_state(qpos[i], qvel[i])
            g_obs, g_r, g_term, _, _ = genv.step(actions[i])
            e.obs = max(e.obs, float(np.abs(obs[i] - g_obs).max()))
            e.reward = max(e.reward, abs(float(rew[i]) - g_r))
            e.term_mismatch += bool(term[i]) != g_term
            e.terminations += g_term
    return e


def trajectory_errors(env_id: str, steps: int = 20, seed: int = 3) -> np.ndarray:
    """``[states, steps]`` max(|obs|, |reward|) differences along unsynchronised
    trajectories from every visited state (the same batch as :func:`one_step_errors`, so the
    same programs; NaN after a termination; a termination mismatch counts as inf)."""
    p = programs(env_id)
    genv = gym_env(env_id)
    qpos, qvel, _ = visited_states(env_id)
    starts = len(qpos)
    dtype = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
    actions = random_actions(np.random.default_rng(seed), p.env, (steps, starts))
    state = p.state_at(jnp.asarray(qpos, dtype), jnp.asarray(qvel, dtype))
    ours = []
    for t in range(steps):
        state = p.step(state, jnp.asarray(actions[t], dtype))
        ours.append(jax.device_get((state.obs, state.reward, state.terminated)))
    err = np.full((starts, steps), np.nan)
    for i in range(starts):
        genv.set_state(qpos[i], qvel[i])
        for t in range(steps):
            obs, r, term, _, _ = genv.step(actions[t, i])
            err[i, t] = max(float(np.abs(ours[t][0][i] - obs).max()),
                            abs(float(ours[t][1][i]) - r))
            if bool(ours[t][2][i]) != term:
                err[i, t] = np.inf
            if term:
                break
    return err


def horizon(err: np.ndarray, tol: float) -> int:
    """Steps before the first one (over all trajectories) whose error exceeds ``tol``."""
    bad = np.where(np.nan_to_num(err, nan=0.0) > tol)[1]
    return int(bad.min()) if len(bad) else err.shape[1]


def reset_moments(env_id: str, n: int = 2000):
    """``(ours [n, nq+nv], gymnasium's [n, nq+nv], our reset state, its obs)``: reset states
    of the port (float32 programs) and of Gymnasium's env."""
    env = make_env(env_id)
    s = jax.jit(jax.vmap(env.reset))(jax.random.split(jax.random.PRNGKey(0), n))
    ours = np.concatenate([np.asarray(s.data.qpos), np.asarray(s.data.qvel)], axis=1)
    genv = gym_env(env_id)
    theirs = []
    for i in range(n):
        genv.reset(seed=i)
        theirs.append(np.concatenate([genv.data.qpos, genv.data.qvel]))
    genv.set_state(np.asarray(s.data.qpos[0], np.float64), np.asarray(s.data.qvel[0], np.float64))
    return ours, np.array(theirs), np.asarray(s.obs[0]), genv._get_obs()
