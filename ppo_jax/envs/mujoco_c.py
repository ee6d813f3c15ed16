"""A Gymnasium MuJoCo port in MuJoCo C: the simulator the TorchRL tutorial trains on.

:class:`MujocoCEnv` steps the same MJCF as an MJX port (:class:`ppo_jax.envs.base.MujocoEnv`)
through ``mujoco``'s C API with Gymnasium v4's stepping: ``ctrl = action``, ``mj_step`` x
``frame_skip``, then ``mj_rnePostConstraint``; the observation, reward and termination are the
port's own functions evaluated with numpy on the ``MjData`` (one definition of each env's
semantics, two simulators); ``truncated`` at the time limit. Unlike the MJX env it keeps the
model's own solver settings (for the pendulum: MuJoCo's defaults of 100 iterations, 50
line-search iterations and the warm start, where MJX caps them), as Gymnasium does.
Everything is float64.

A restored policy runs in it through :mod:`ppo_jax.eval.evaluate` (:func:`~ppo_jax.eval.evaluate.
mujoco_episodes`, from the start states of MJX's episodes).
"""

from __future__ import annotations

import dataclasses

import mujoco
import numpy as np

from ppo_jax.envs.base import MujocoEnv
from ppo_jax.envs.base import load_asset_model


def default_solver_model(mjx_env: MujocoEnv | None = None) -> mujoco.MjModel:
    """The env's MJCF with its own solver options, as Gymnasium loads it (cached; read-only)."""
    return load_asset_model(_port(mjx_env).xml)


def _port(mjx_env):
    if mjx_env is None:
        from ppo_jax.envs import InvertedDoublePendulum

        return InvertedDoublePendulum()
    if not isinstance(mjx_env, MujocoEnv):
        raise ValueError(
            f"{getattr(mjx_env, 'env_id', type(mjx_env).__name__)} has no MuJoCo C simulator "
            "here (only the Gymnasium MuJoCo ports have one): evaluate it with --sim mjx")
    return mjx_env


@dataclasses.dataclass(frozen=True)
class Step:
    """One env step: ``obs`` float64, ``reward``, ``terminated``, ``truncated``."""

    obs: np.ndarray
    reward: float
    terminated: bool
    truncated: bool

    @property
    def done(self) -> bool:
        return self.terminated or self.truncated


class MujocoCEnv:
    """The MJX port ``mjx_env`` (default: ``InvertedDoublePendulum-v4``) on MuJoCo C (one
    env, stateful, host side), with its frame skip and time limit (``max_episode_steps``
    overrides the latter)."""

    def __init__(self, mjx_env: MujocoEnv | None = None, max_episode_steps: int | None = None):
        self.port = _port(mjx_env)
        self.model = default_solver_model(self.port)
        self.data = mujoco.MjData(self.model)
        self._before = mujoco.MjData(self.model)
        self.max_episode_steps = int(max_episode_steps or self.port.max_episode_steps)
        self.frame_skip = self.port.frame_skip
        self.dt = self.model.opt.timestep * self.frame_skip
        self.steps = 0

    def observation(self) -> np.ndarray:
        return np.asarray(self.port.observation(self.data, np), np.float64)

    def reset_to(self, qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
        """Start from ``qpos``, ``qvel`` (Gymnasium's ``set_state``); obs."""
        mujoco.mj_resetData(self.model, self.data)
        self.data.qpos[:] = np.asarray(qpos, np.float64)
        self.data.qvel[:] = np.asarray(qvel, np.float64)
        mujoco.mj_forward(self.model, self.data)
        self.steps = 0
        return self.observation()

    def reset(self, rng: np.random.Generator) -> np.ndarray:
        """The env's reset distribution (the port's ``reset_noise``, drawn with a key from
        ``rng``); obs."""
        import jax
        import jax.numpy as jnp

        key = jax.random.PRNGKey(int(rng.integers(2**31)))
        qpos, qvel = self.port.reset_noise(key, jnp.asarray(self.model.qpos0, jnp.float32),
                                           jnp.zeros(self.model.nv, jnp.float32))
        return self.reset_to(np.asarray(qpos, np.float64), np.asarray(qvel, np.float64))

    def step(self, action: np.ndarray) -> Step:
        """``ctrl = action`` (MuJoCo clamps it to the ctrlrange), ``frame_skip`` steps."""
        action = np.asarray(action, np.float64).reshape(-1)
        mujoco.mj_copyData(self._before, self.model, self.data)
        self.data.ctrl[:] = action
        mujoco.mj_step(self.model, self.data, nstep=self.frame_skip)
        mujoco.mj_rnePostConstraint(self.model, self.data)
        self.steps += 1
        reward, terminated = self.port.reward_terminated(self._before, self.data, action, np)
        return Step(
            obs=self.observation(),
            reward=float(reward),
            terminated=bool(terminated),
            truncated=self.steps >= self.max_episode_steps,
        )

    @property
    def state(self) -> tuple[np.ndarray, np.ndarray]:
        """Copies of ``(qpos, qvel)``."""
        return self.data.qpos.copy(), self.data.qvel.copy()


@dataclasses.dataclass(frozen=True)
class Trajectory:
    """``T`` steps of fixed actions. ``obs`` ``[T + 1, obs]``, ``qpos``/``qvel`` ``[T + 1, n]``
    (row 0: the start), ``reward``/``terminated`` ``[T]``."""

    obs: np.ndarray
    qpos: np.ndarray
    qvel: np.ndarray
    reward: np.ndarray
    terminated: np.ndarray


def run_actions(env: MujocoCEnv, qpos, qvel, actions: np.ndarray) -> Trajectory:
    """Step ``env`` from ``(qpos, qvel)`` through ``actions`` ``[T, action_size]``, past
    terminations."""
    obs = [env.reset_to(qpos, qvel)]
    states = [env.state]
    rewards, terms = [], []
    for a in np.asarray(actions):
        s = env.step(a)
        obs.append(s.obs)
        states.append(env.state)
        rewards.append(s.reward)
        terms.append(s.terminated)
    return Trajectory(
        obs=np.array(obs),
        qpos=np.array([q for q, _ in states]),
        qvel=np.array([v for _, v in states]),
        reward=np.array(rewards),
        terminated=np.array(terms),
    )
